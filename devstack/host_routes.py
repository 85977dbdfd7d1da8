"""HTTP trigger route templates, matched the way the Functions host (ASP.NET routing) does.

Supported: literal segments (case-insensitive), `{name}`, constraints `{id:int}`, `{id:guid}`,
`{name:alpha}`, `{n:min(1)}`, `{s:length(2,8)}`, `{x:regex(^a+$)}` (several may be chained),
optional `{x?}` and defaults `{x=value}` (the segment may be left out), catch-alls `{*rest}`,
and parameters mixed with literals inside one segment (`{name}.{ext}`). Captured values are
URL-decoded. More specific templates win: literals before constrained parameters before plain
parameters before catch-alls.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import unquote

Check = Callable[[str], bool]


def _is_int(bits: int) -> Check:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return lambda v: re.fullmatch(r"-?\d+", v) is not None and low <= int(v) <= high


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ("nan", "inf", "-inf", "infinity", "-infinity")


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value.strip("{}()"))
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


_SIMPLE_CONSTRAINTS: dict[str, Check] = {
    "int": _is_int(32),
    "long": _is_int(64),
    "bool": lambda v: v.lower() in ("true", "false"),
    "guid": _is_guid,
    "alpha": lambda v: re.fullmatch(r"[a-zA-Z]+", v) is not None,
    "datetime": _is_datetime,
    "decimal": _is_float,
    "double": _is_float,
    "float": _is_float,
    "required": lambda v: v != "",
}


def _constraint(spec: str) -> Check:
    name, paren, argument = spec.partition("(")
    name = name.strip().lower()
    if not paren:
        if name not in _SIMPLE_CONSTRAINTS:
            raise ValueError(f"unknown route constraint '{spec}'")
        return _SIMPLE_CONSTRAINTS[name]
    if not argument.endswith(")"):
        raise ValueError(f"route constraint '{spec}' lacks its closing parenthesis")
    argument = argument[:-1]
    if name == "regex":
        pattern = re.compile(argument, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    numbers = [int(a) for a in argument.split(",")]
    if name == "minlength" and len(numbers) == 1:
        return lambda v: len(v) >= numbers[0]
    if name == "maxlength" and len(numbers) == 1:
        return lambda v: len(v) <= numbers[0]
    if name == "length" and len(numbers) in (1, 2):
        low, high = numbers[0], numbers[-1]
        return lambda v: low <= len(v) <= high
    is_long = _is_int(64)
    if name == "min" and len(numbers) == 1:
        return lambda v: is_long(v) and int(v) >= numbers[0]
    if name == "max" and len(numbers) == 1:
        return lambda v: is_long(v) and int(v) <= numbers[0]
    if name == "range" and len(numbers) == 2:
        return lambda v: is_long(v) and numbers[0] <= int(v) <= numbers[1]
    raise ValueError(f"unknown route constraint '{spec}'")


@dataclass(frozen=True)
class _Parameter:
    name: str
    checks: tuple[Check, ...]
    optional: bool
    default: str | None
    catch_all: bool


@dataclass(frozen=True)
class RouteTemplate:
    template: str
    pattern: re.Pattern[str]
    parameters: tuple[_Parameter, ...]
    precedence: tuple[int, ...] = field(compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values when `path` (URL-encoded, no query string) matches, else None."""
        # Like ASP.NET, decode everything but %2F so an encoded slash cannot split a segment.
        decoded = unquote(re.sub("%2[Ff]", "%252F", path))
        found = self.pattern.fullmatch(decoded)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, parameter in enumerate(self.parameters):
            value = found.group(f"p{index}")
            if value is None:
                if parameter.default is not None:
                    values[parameter.name] = parameter.default
                continue
            value = value.replace("%2F", "/").replace("%2f", "/")
            if not all(check(value) for check in parameter.checks):
                return None
            values[parameter.name] = value
        return values


_TOKEN = re.compile(r"\{\{|\}\}|\{[^{}]*\}|[^{}]+|[{}]")


def compile_route(template: str) -> RouteTemplate:
    """Compile a route template (without the route prefix's leading slash); ValueError if malformed."""
    segments = [s for s in template.strip().strip("/").split("/")]
    if segments == [""]:
        segments = []
    parameters: list[_Parameter] = []
    regex = ""
    precedence: list[int] = []
    names: set[str] = set()
    for position, segment in enumerate(segments):
        if segment == "":
            raise ValueError(f"route '{template}' has an empty segment")
        tokens = _TOKEN.findall(segment)
        if "".join(tokens) != segment or any(t in ("{", "}") for t in tokens):
            raise ValueError(f"route '{template}' has unbalanced braces in '{segment}'")
        parts: list[str] = []
        kinds: list[int] = []
        for token in tokens:
            if token in ("{{", "}}"):
                parts.append(re.escape(token[0]))
                kinds.append(1)
                continue
            if not token.startswith("{"):
                parts.append(re.escape(token))
                kinds.append(1)
                continue
            parameter = _parse_parameter(token[1:-1], template)
            if parameter.name.lower() in names:
                raise ValueError(f"route '{template}' uses the parameter '{parameter.name}' twice")
            names.add(parameter.name.lower())
            if parameter.catch_all and (position != len(segments) - 1 or len(tokens) != 1):
                raise ValueError(f"catch-all '{token}' must be the whole last segment of '{template}'")
            if (parameter.optional or parameter.default is not None) and len(tokens) != 1:
                raise ValueError(f"optional parameter '{token}' must be a whole segment in '{template}'")
            group = f"(?P<p{len(parameters)}>{'.*' if parameter.catch_all else '[^/]+'})"
            parameters.append(parameter)
            parts.append(group)
            kinds.append(5 if parameter.catch_all else 3 if parameter.checks else 4)
        body = "".join(parts)
        only = parameters[-1] if len(tokens) == 1 and kinds[0] != 1 else None
        if only is not None and (only.optional or only.default is not None or only.catch_all):
            regex += f"(?:/{body})?"
        else:
            regex += "/" + body
        precedence.append(1 if kinds == [1] else 2 if len(kinds) > 1 else kinds[0])
    # DOTALL: a catch-all takes every character, a decoded %0A too (ASP.NET Core's `{*path}` does).
    pattern = re.compile(regex + "/?", re.IGNORECASE | re.DOTALL)
    return RouteTemplate(template, pattern, tuple(parameters), (*precedence, 9))


def _parse_parameter(inner: str, template: str) -> _Parameter:
    catch_all = inner.startswith("*")
    inner = inner.lstrip("*")
    default: str | None = None
    if "=" in inner:
        inner, default = inner.split("=", 1)
    optional = inner.endswith("?")
    inner = inner.rstrip("?")
    name, *constraint_specs = _split_constraints(inner)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"route '{template}' has an invalid parameter name '{name}'")
    checks = tuple(_constraint(spec) for spec in constraint_specs)
    return _Parameter(name, checks, optional, default, catch_all)


def _split_constraints(inner: str) -> list[str]:
    """`id:int:min(1)` -> ['id', 'int', 'min(1)'], keeping colons inside parentheses."""
    pieces: list[str] = []
    depth = 0
    current = ""
    for char in inner:
        if char == ":" and depth == 0:
            pieces.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    pieces.append(current)
    return pieces
