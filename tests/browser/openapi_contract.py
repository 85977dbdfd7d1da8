"""Checks real HTTP exchanges against `shared/openapi.json`: the operation for the method and path,
the status among its described responses, the JSON body against that response's schema.

Checks are stricter than the document's promise to clients: an object may not carry a field the
document does not describe (clients must tolerate added fields; the document must still name them)."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO = Path(__file__).resolve().parents[2]
DOCUMENT = REPO / "shared" / "openapi.json"
_URI = "urn:coagentor:openapi"

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None and "T" in value


@_formats.checks("uri", raises=ValueError)
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc)


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _allof_targets(node: Any, found: set[str]) -> set[str]:
    """Component schemas used as a member of an allOf (they describe part of an object)."""
    if isinstance(node, dict):
        for member in node.get("allOf", []):
            ref = member.get("$ref", "") if isinstance(member, dict) else ""
            if ref.startswith("#/components/schemas/"):
                found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            _allof_targets(value, found)
    elif isinstance(node, list):
        for value in node:
            _allof_targets(value, found)
    return found


def _tighten(node: Any, partial: bool = False) -> None:
    """No undescribed fields: `unevaluatedProperties: false` on every whole-object schema (not on an
    allOf member, which describes only part of one; the allOf's owner gets it instead)."""
    if not isinstance(node, dict) or "$ref" in node:
        return
    if not partial and ("properties" in node or "allOf" in node) and "additionalProperties" not in node:
        node.setdefault("unevaluatedProperties", False)
    for member in node.get("allOf", []):
        _tighten(member, partial=True)
    for key in ("oneOf", "anyOf"):
        for member in node.get(key, []):
            _tighten(member)
    for value in node.get("properties", {}).values():
        _tighten(value)
    if isinstance(node.get("items"), dict):
        _tighten(node["items"])


@dataclass
class Exchange:
    method: str
    path: str
    status: int
    operation: str | None = None


@dataclass
class Contract:
    document: dict[str, Any]
    seen: list[Exchange] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = DOCUMENT) -> Contract:
        return cls(json.loads(path.read_text()))

    def __post_init__(self) -> None:
        strict = copy.deepcopy(self.document)
        partial = _allof_targets(strict, set())
        for name, schema in strict.get("components", {}).get("schemas", {}).items():
            _tighten(schema, partial=name in partial)
        for item in strict.get("paths", {}).values():
            for op in item.values():
                for response in op.get("responses", {}).values():
                    for media in response.get("content", {}).values():
                        _tighten(media.get("schema"))
                for media in op.get("requestBody", {}).get("content", {}).values():
                    _tighten(media.get("schema"))
        for response in strict.get("components", {}).get("responses", {}).values():
            for media in response.get("content", {}).values():
                _tighten(media.get("schema"))
        self.strict = strict
        self._registry: Registry[Any] = Registry().with_resource(
            _URI, Resource.from_contents(strict, default_specification=DRAFT202012))
        prefix = urlsplit(self.document["servers"][0]["url"]).path.rstrip("/")
        self.prefix = prefix
        self._templates: list[tuple[re.Pattern[str], str]] = []
        # Literal paths first, then fewer parameters, longer first; catch-alls (`{*rest}`) last.
        for template in sorted(self.document["paths"], key=lambda t: ("{*" in t, t.count("{"), -len(t))):
            pattern = re.sub(r"\\\{\\\*[^/]+?\\\}", ".+", re.escape(template))
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", pattern)
            self._templates.append((re.compile(f"^{pattern}$"), template))

    # ---------------------------------------------------------------- lookup
    def template_for(self, url_path: str, method: str | None = None) -> str | None:
        """`/api/outlook/connections/abc` → `/outlook/connections/{id}`; with a method, the first
        template that describes that method (a catch-all route serves only some methods)."""
        if not url_path.startswith(self.prefix + "/"):
            return None
        rest = url_path[len(self.prefix):]
        for rx, t in self._templates:
            if rx.match(rest) and (method is None or method.lower() in self.document["paths"][t]):
                return t
        return None

    def _validator(self, *pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{_URI}#/{_pointer(*pointer)}"}, registry=self._registry,
                                    format_checker=_formats)

    def _response(self, template: str, method: str, status: int) -> tuple[tuple[str, ...], dict[str, Any]] | None:
        responses = self.strict["paths"][template][method]["responses"]
        key = str(status) if str(status) in responses else "default" if "default" in responses else None
        if key is None:
            return None
        response = responses[key]
        where: tuple[str, ...] = ("paths", template, method, "responses", key)
        if "$ref" in response:
            name = response["$ref"].rsplit("/", 1)[1]
            where = ("components", "responses", name)
            response = self.strict["components"]["responses"][name]
        return where, response

    # ---------------------------------------------------------------- checks
    def check_request(self, method: str, url: str, body: bytes | None) -> list[str]:
        path = urlsplit(url).path
        method = method.lower()
        template = self.template_for(path, method)
        if template is None or method not in self.document["paths"][template]:
            return [f"{method.upper()} {path}: not described in the OpenAPI document"]
        spec = self.strict["paths"][template][method].get("requestBody")
        if not body:
            if spec and spec.get("required"):
                return [f"{method.upper()} {path}: the request body is required"]
            return []
        if spec is None or "application/json" not in spec.get("content", {}):
            return [f"{method.upper()} {path}: a JSON body is not described"]
        try:
            data = json.loads(body)
        except ValueError:
            return [f"{method.upper()} {path}: the request body is not JSON"]
        validator = self._validator("paths", template, method, "requestBody", "content", "application/json",
                                    "schema")
        return [f"{method.upper()} {path} request: {e.message} at {list(e.absolute_path)}"
                for e in validator.iter_errors(data)]

    def check_response(self, method: str, url: str, status: int, content_type: str | None,
                       body: bytes) -> list[str]:
        path = urlsplit(url).path
        method = method.lower()
        template = self.template_for(path, method)
        if template is None or method not in self.document["paths"][template]:
            return [f"{method.upper()} {path}: not described in the OpenAPI document"]
        self.seen.append(Exchange(method, template, status, self.document["paths"][template][method].get(
            "operationId")))
        found = self._response(template, method, status)
        what = f"{method.upper()} {template} → {status}"
        if found is None:
            return [f"{what}: status not described"]
        where, response = found
        content = response.get("content", {})
        if not content:
            return [f"{what}: the document describes no body but one came"] if body else []
        media = (content_type or "").split(";")[0].strip().lower()
        if media not in content:
            return [f"{what}: content type {media or 'none'} not described ({', '.join(content)})"]
        if media != "application/json":
            return []
        try:
            data = json.loads(body)
        except ValueError:
            return [f"{what}: body is not JSON"]
        validator = self._validator(*where, "content", "application/json", "schema")
        return [f"{what}: {e.message} at {list(e.absolute_path) or 'the top'}" for e in validator.iter_errors(data)]

    def described_responses(self) -> set[tuple[str, str, str]]:
        """Every (method, path, status) that describes a JSON body."""
        out: set[tuple[str, str, str]] = set()
        for template, item in self.document["paths"].items():
            for method, op in item.items():
                for status in op.get("responses", {}):
                    out.add((method, template, status))
        return out
