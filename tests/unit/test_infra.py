"""The deployment (infra/*.bicep, main.parameters.json, azure.yaml, local.settings.example.json) agrees
with the code: every setting the code reads is set, nothing unread is set, and no secret appears in app
settings, parameters or outputs.

There is no Bicep CLI here, so Bicep is read with tree-sitter-bicep: syntax only (no types, no API
versions). Settings are taken from the parse tree, not from regexes over the text."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

from shared.adapters.queues import QUEUES
from shared.adapters.tables import KEY_TABLES, TABLES
from shared.config import CREDENTIAL_SETTINGS, LOCAL_ONLY_SETTINGS, SETTINGS

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"
FUNCTION_APP = INFRA / "modules" / "function-app.bicep"
ROLE_ASSIGNMENTS = INFRA / "modules" / "role-assignments.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))
READ_BY_CODE = set(SETTINGS) | set(CREDENTIAL_SETTINGS)

# Set in Azure for the Functions host or the Application Insights agent; the app code does not read them.
HOST_SETTINGS_IN_AZURE = {
    "AzureWebJobsStorage__accountName": "host storage account (identity-based AzureWebJobsStorage)",
    "AzureWebJobsStorage__blobServiceUri": "host blobs: locks, timer schedules, keys",
    "AzureWebJobsStorage__credential": "'managedidentity': identity-based host storage",
    "AzureWebJobsStorage__clientId": "which user-assigned identity the host's storage clients use",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "telemetry endpoint; not a secret (azd samples set it too)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Entra ID telemetry ingestion with the app identity",
}
# The code reads these, but an Azure deployment must leave them unset.
READ_BUT_NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "connection string (Azurite); Azure uses the identity-based __ forms",
    **{name: "client-secret credential of the local stack (shared/config.py)" for name in LOCAL_ONLY_SETTINGS},
    "PAGE_TOKEN_FROM_URL": "local-stack convenience: a token in the page URL would let a link plant a session",
}
# Not used on Flex Consumption (runtime, version and package come from functionAppConfig); setting them
# is at best ignored.
FLEX_UNSUPPORTED = {
    "FUNCTIONS_EXTENSION_VERSION", "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_NODE_DEFAULT_VERSION", "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD",
}
# Read by the local Functions host or the local stack's HTTP clients, not by the app code.
LOCAL_HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME": "the local host needs the language; Flex takes it from functionAppConfig",
    "AzureWebJobsFeatureFlags": "host feature switches",
    "AzureWebJobsSecretStorageType": "where a local host keeps its function keys",
    "REQUESTS_CA_BUNDLE": "local CA bundle; requests lets it override session.verify (FACTS.md)",
    "SSL_CERT_FILE": "the same bundle for the ssl module",
}
# Built-in roles the app's identity holds (role-assignments.bicep), and the one it must not need.
EXPECTED_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",  # Storage Blob Data Owner
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88",  # Storage Queue Data Contributor
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",  # Storage Table Data Contributor
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7",  # Key Vault Secrets Officer (only while migrating, below)
    "4633458b-17de-408a-b874-0445c86b69e6",  # Key Vault Secrets User (once migrated)
    "e147488a-f6f5-4113-8e2d-b22465e65bf6",  # Key Vault Crypto Service Encryption User (the data-key key only)
    "3913510d-42f4-4e42-8a64-420c390055eb",  # Monitoring Metrics Publisher
}
SECRET_SETTING_NAME = re.compile(r"secret|password|api_?key|access_?key|connection_?string", re.I)
SECRET_MATERIAL = re.compile(
    r"listKeys|listSecrets|listCredentials|listConnectionStrings|AccountKey=|SharedAccessKey|"
    r"DefaultEndpointsProtocol|primaryKey|secondaryKey|InstrumentationKey",
    re.I,
)
OUTPUT_NAME = re.compile(r"(name|id|uri|url|endpoint|location|group)$", re.I)
SECRET_OUTPUT_NAME = re.compile(r"secret|password|connection_?string|access_?key|api_?key|token", re.I)

# ---------------------------------------------------------------------------------------------------
# A few tree-sitter-bicep helpers
# ---------------------------------------------------------------------------------------------------

_PARSER = Parser(Language(tree_sitter_bicep.language()))
_ESCAPES = {"\\n": "\n", "\\r": "\r", "\\t": "\t", "\\\\": "\\", "\\'": "'", "\\$": "$"}


# Bicep's `extension` declaration (Microsoft Graph, for the app registration's federated credential)
# is newer than tree-sitter-bicep 1.1.0, which reads it as an error: it is blanked (same length, so
# positions hold) before parsing, and checked on its own (test_the_graph_extension_is_pinned).
EXTENSION_LINE = re.compile(rb"^extension [^\n]*$", re.M)
GRAPH_EXTENSION = re.compile(r"^extension 'br:mcr\.microsoft\.com/bicep/extensions/microsoftgraph/v1\.0:"
                             r"\d+\.\d+\.\d+(-preview)?'$")


@cache
def parse(path: Path) -> Node:
    source = EXTENSION_LINE.sub(lambda m: b" " * len(m.group(0)), path.read_bytes())
    return _PARSER.parse(source).root_node


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def text(node: Node) -> str:
    return node.text.decode() if node.text is not None else ""


def kids(node: Node) -> list[Node]:
    return [c for c in node.named_children if c.type != "comment"]


def literal(node: Node) -> str | None:
    """A string without interpolation, a number or a boolean as text; None for anything computed."""
    if node.type in ("number", "boolean"):
        return text(node)
    if node.type != "string":
        return None
    parts = []
    for part in kids(node):
        if part.type == "string_content":
            parts.append(text(part))
        elif part.type == "escape_sequence":
            parts.append(_ESCAPES.get(text(part), text(part)))
        else:
            return None
    return "".join(parts)


def entries(obj: Node) -> dict[str, Node]:
    """Keys and value nodes of an object literal."""
    assert obj.type == "object", f"expected an object literal, got {obj.type}: {text(obj)[:80]}"
    out = {}
    for prop in kids(obj):
        if prop.type == "object_property":
            key, value = kids(prop)[0], kids(prop)[-1]
            out[literal(key) or text(key)] = value
    return out


def declarations(path: Path, kind: str) -> dict[str, Node]:
    """Top-level declarations of one kind (parameter, variable, output, resource, module) by name."""
    return {text(kids(d)[0]): d for d in kids(parse(path)) if d.type == f"{kind}_declaration"}


def value_of(declaration: Node) -> Node | None:
    """What follows '=' in a declaration (a param's default); the object inside a for/if body."""
    after = False
    for child in declaration.children:
        if after and child.type != "comment":
            while child.type in ("for_statement", "if_statement"):
                child = kids(child)[-1]
            return child
        after = child.type == "="
    return None


def decorator_names(declaration: Node) -> set[str]:
    previous = declaration.prev_named_sibling
    while previous is not None and previous.type == "comment":
        previous = previous.prev_named_sibling
    if previous is None or previous.type != "decorators":
        return set()
    return {text(kids(kids(d)[0])[0]) for d in kids(previous)}


def resources(path: Path) -> list[tuple[str, Node]]:
    """(type@version, body object) of every resource declared in a file."""
    out = []
    for declaration in declarations(path, "resource").values():
        body = value_of(declaration)
        assert body is not None
        out.append((literal(kids(declaration)[1]) or "", body))
    return out


def resource_of_type(path: Path, type_prefix: str) -> Node:
    found = [body for kind, body in resources(path) if kind.startswith(type_prefix + "@")]
    assert len(found) == 1, f"expected one {type_prefix} in {path.name}, found {len(found)}"
    return found[0]


def prop(obj: Node, *path: str) -> Node:
    for key in path:
        obj = entries(obj)[key]
    return obj


def call(node: Node) -> tuple[str, list[Node]] | None:
    if node.type != "call_expression":
        return None
    function, arguments = kids(node)
    return text(function), kids(arguments)


def resolve(path: Path, node: Node) -> str | None:
    """The value an expression has when nobody overrides a parameter: literals, parameter defaults,
    variables and string(...) of those. None when it is computed at deployment."""
    value = literal(node)
    if value is not None:
        return value
    if node.type == "identifier":
        for kind in ("parameter", "variable"):
            declaration = declarations(path, kind).get(text(node))
            target = value_of(declaration) if declaration is not None else None
            if target is not None:
                return resolve(path, target)
        return None
    called = call(node)
    if called is not None and called[0] == "string" and len(called[1]) == 1:
        return resolve(path, called[1][0])
    return None


def app_settings() -> dict[str, tuple[Path, Node]]:
    """Every app setting of the function app: the appSettings object main.bicep passes to the module,
    merged with the objects the module's sites/config 'appsettings' resource unions in."""
    settings: dict[str, tuple[Path, Node]] = {}
    modules = [m for m in declarations(MAIN, "module").values()
               if literal(kids(m)[1]) == "modules/function-app.bicep"]
    assert len(modules) == 1, "main.bicep should call modules/function-app.bicep once"
    body = value_of(modules[0])
    assert body is not None
    for name, value in entries(prop(body, "params", "appSettings")).items():
        settings[name] = (MAIN, value)

    config = [body for kind, body in resources(FUNCTION_APP)
              if kind.startswith("Microsoft.Web/sites/config@") and literal(prop(body, "name")) == "appsettings"]
    assert len(config) == 1, "function-app.bicep should have one sites/config 'appsettings' resource"
    merged = prop(config[0], "properties")
    called = call(merged)
    parts = called[1] if called is not None and called[0] == "union" else [merged]
    module_params = declarations(FUNCTION_APP, "parameter")
    module_vars = declarations(FUNCTION_APP, "variable")
    for part in parts:
        if part.type == "identifier" and text(part) == "appSettings" and "appSettings" in module_params:
            continue  # the object from main.bicep, read above
        if part.type == "identifier" and text(part) in module_vars:
            part = value_of(module_vars[text(part)]) or part
        assert part.type == "object", f"app settings built in a way this test cannot read: {text(part)[:80]}"
        for name, value in entries(part).items():
            assert name not in settings, f"{name} is set twice"
            settings[name] = (FUNCTION_APP, value)
    return settings


def secure_params() -> set[str]:
    return {name for path in BICEP_FILES for name, d in declarations(path, "parameter").items()
            if "secure" in decorator_names(d)}


def local_settings() -> dict[str, str]:
    path = REPO / "local.settings.example.json"
    assert path.exists(), "local.settings.example.json (repo root, with a Values object) is missing"
    values: dict[str, str] = json.loads(path.read_text())["Values"]
    return values


# ---------------------------------------------------------------------------------------------------
# Syntax
# ---------------------------------------------------------------------------------------------------


def test_infra_has_a_main_template_and_modules() -> None:
    assert MAIN in BICEP_FILES and FUNCTION_APP in BICEP_FILES and ROLE_ASSIGNMENTS in BICEP_FILES


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses_without_errors(path: Path) -> None:
    broken = [f"line {n.start_point[0] + 1}: {'missing ' + n.type if n.is_missing else text(n)[:60]!r}"
              for n in walk(parse(path)) if n.type == "ERROR" or n.is_missing]
    assert not broken, f"{path.name} does not parse: {broken}"


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_every_parameter_is_described(path: Path) -> None:
    undescribed = [name for name, d in declarations(path, "parameter").items()
                   if "description" not in decorator_names(d)]
    assert not undescribed, f"{path.name}: parameters without @description: {undescribed}"


# ---------------------------------------------------------------------------------------------------
# App settings against shared/config.py
# ---------------------------------------------------------------------------------------------------


def test_infra_sets_every_setting_the_code_reads() -> None:
    expected = READ_BY_CODE - set(READ_BUT_NOT_SET_IN_AZURE)
    missing = sorted(expected - set(app_settings()))
    assert not missing, f"the code reads these but infra does not set them: {missing}"


def test_infra_sets_nothing_the_code_or_host_does_not_read() -> None:
    unread = sorted(set(app_settings()) - READ_BY_CODE - set(HOST_SETTINGS_IN_AZURE))
    assert not unread, f"infra sets settings nothing reads (add them to the allow-list with a reason): {unread}"


def test_infra_leaves_out_local_only_connection_string_and_flex_unsupported_settings() -> None:
    forbidden = sorted(set(app_settings()) & (set(READ_BUT_NOT_SET_IN_AZURE) | FLEX_UNSUPPORTED))
    assert not forbidden, f"must not be set in Azure: {forbidden}"


# Where Azure deploys another default than the code's (the local stack's), on purpose.
DEPLOYED_DEFAULTS = {
    # No client secret where Azure allows it; the local stack signs in with the simulator's secret
    # unless told otherwise (docs/deploying.md, "No client secret").
    "OUTLOOK_CLIENT_CREDENTIAL": "managed_identity",
}


def test_infra_defaults_equal_the_code_defaults() -> None:
    differing = {}
    settings = app_settings()
    for name, (path, value) in settings.items():
        code_default = SETTINGS.get(name)
        infra_default = resolve(path, value)
        if name in DEPLOYED_DEFAULTS:
            assert infra_default == DEPLOYED_DEFAULTS[name], (name, infra_default)
            continue
        if code_default is not None and infra_default is not None and infra_default != code_default:
            differing[name] = (infra_default, code_default)
    assert not differing, f"infra default differs from shared/config.py (infra, code): {differing}"
    assert set(DEPLOYED_DEFAULTS) <= set(settings)


def test_required_settings_have_no_default_in_infra() -> None:
    # A required setting with a made-up default would deploy a broken app instead of asking the operator.
    params = declarations(MAIN, "parameter")
    defaulted = sorted(name for name, (path, value) in app_settings().items()
                       if SETTINGS.get(name, "") is None and path == MAIN and value.type == "identifier"
                       and text(value) in params and value_of(params[text(value)]) is not None)
    assert not defaulted, f"required settings given a default in main.bicep: {defaulted}"


def test_local_settings_example_has_every_required_setting() -> None:
    values = local_settings()
    required = {name for name, default in SETTINGS.items() if default is None}
    missing = sorted(required - set(values))
    assert not missing, f"local.settings.example.json lacks required settings: {missing}"
    has_storage = "AzureWebJobsStorage" in values or {
        "AzureWebJobsStorage__tableServiceUri", "AzureWebJobsStorage__queueServiceUri"} <= set(values)
    assert has_storage, "local.settings.example.json needs AzureWebJobsStorage (or both service URIs)"


def test_local_settings_example_sets_nothing_unread() -> None:
    unread = sorted(set(local_settings()) - READ_BY_CODE - set(LOCAL_HOST_SETTINGS))
    assert not unread, f"local.settings.example.json sets settings nothing reads: {unread}"


# ---------------------------------------------------------------------------------------------------
# No secrets in settings, parameters or outputs
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: str(p.relative_to(INFRA)))
def test_bicep_never_reads_keys_or_builds_connection_strings(path: Path) -> None:
    leaks = sorted({text(n) for n in walk(parse(path))
                    if n.type != "comment" and n.child_count == 0 and SECRET_MATERIAL.search(text(n))})
    assert not leaks, f"{path.name} handles key material: {leaks}"


def test_app_settings_carry_secrets_only_as_key_vault_references() -> None:
    secure = secure_params()
    offending = []
    for name, (_, value) in app_settings().items():
        is_reference = text(value).startswith("'@Microsoft.KeyVault(")
        looks_secret = bool(SECRET_SETTING_NAME.search(name)) and not name.endswith("_NAME")
        if looks_secret and name not in HOST_SETTINGS_IN_AZURE and not is_reference:
            offending.append(name)
        if not is_reference and any(n.type == "identifier" and text(n) in secure for n in walk(value)):
            offending.append(name)
    assert not offending, f"app settings holding a secret value: {offending}"


def test_storage_keys_are_off_and_the_host_uses_the_managed_identity() -> None:
    settings = app_settings()
    path, credential = settings["AzureWebJobsStorage__credential"]
    assert resolve(path, credential) == "managedidentity"
    assert "AzureWebJobsStorage__clientId" in settings and "AZURE_CLIENT_ID" in settings


def test_outputs_are_only_names_ids_and_uris() -> None:
    secure = secure_params()
    bad = []
    for path in BICEP_FILES:
        for name, declaration in declarations(path, "output").items():
            value = value_of(declaration)
            assert value is not None
            if (not OUTPUT_NAME.search(name) or SECRET_OUTPUT_NAME.search(name)
                    or "secure" in decorator_names(declaration)
                    or re.search(r"ConnectionString|InstrumentationKey|list\w*\(", text(value))
                    or any(n.type == "identifier" and text(n) in secure for n in walk(value))):
                bad.append(f"{path.name}:{name}")
    assert not bad, f"outputs that are not a name, id or URI: {bad}"


def test_azd_parameters_come_from_the_environment_and_cover_required_parameters() -> None:
    mapped = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    params = declarations(MAIN, "parameter")
    unknown = sorted(set(mapped) - set(params))
    assert not unknown, f"main.parameters.json maps parameters main.bicep lacks: {unknown}"
    required = sorted(name for name, d in params.items() if value_of(d) is None)
    unmapped = sorted(set(required) - set(mapped))
    assert not unmapped, f"required parameters azd cannot fill from the environment: {unmapped}"
    # "" is allowed: an operator may blank principalId to stop the Key Vault grant (docs/deploying.md).
    literal_values = {k: v["value"] for k, v in mapped.items()
                      if v.get("value") != "" and not re.fullmatch(r"\$\{[A-Z0-9_]+(=[^}]*)?\}", str(v.get("value")))}
    assert not literal_values, f"commit only ${{ENV}} references, no values: {literal_values}"
    assert not secure_params() & set(mapped), "a secure parameter is mapped from the environment"


# ---------------------------------------------------------------------------------------------------
# Secure defaults, least privilege, layout
# ---------------------------------------------------------------------------------------------------


def test_resources_have_secure_defaults() -> None:
    modules = INFRA / "modules"
    storage = prop(resource_of_type(modules / "storage.bicep", "Microsoft.Storage/storageAccounts"), "properties")
    assert literal(prop(storage, "allowSharedKeyAccess")) == "false"
    assert literal(prop(storage, "allowBlobPublicAccess")) == "false"
    assert literal(prop(storage, "minimumTlsVersion")) == "TLS1_2"
    assert literal(prop(storage, "supportsHttpsTrafficOnly")) == "true"
    vault = prop(resource_of_type(modules / "key-vault.bicep", "Microsoft.KeyVault/vaults"), "properties")
    assert literal(prop(vault, "enableRbacAuthorization")) == "true"
    assert literal(prop(vault, "enableSoftDelete")) == "true"
    assert literal(prop(vault, "enablePurgeProtection")) == "true"
    site = resource_of_type(FUNCTION_APP, "Microsoft.Web/sites")
    assert literal(prop(site, "properties", "httpsOnly")) == "true"
    assert literal(prop(site, "identity", "type")) == "UserAssigned"
    assert literal(prop(site, "properties", "functionAppConfig", "runtime", "name")) == "python"
    assert resolve(FUNCTION_APP, prop(site, "properties", "functionAppConfig", "runtime", "version")) == "3.11"
    plan = resource_of_type(FUNCTION_APP, "Microsoft.Web/serverfarms")
    assert literal(prop(plan, "sku", "tier")) == "FlexConsumption"
    insights = resource_of_type(modules / "monitoring.bicep", "Microsoft.Insights/components")
    assert literal(prop(insights, "properties", "DisableLocalAuth")) == "true"


def test_role_assignments_are_named_from_scope_principal_and_role() -> None:
    for path in BICEP_FILES:
        for kind, body in resources(path):
            if kind.startswith("Microsoft.Authorization/roleAssignments@"):
                called = call(prop(body, "name"))
                assert called is not None and called[0] == "guid" and len(called[1]) == 3, text(body)[:120]


def resolve_role(roles: Node, reference: Node) -> str | None:
    """roles.<name> -> the role id the `roles` variable gives it."""
    name = text(reference).removeprefix("roles.")
    value = entries(roles).get(name)
    return literal(value) if value is not None else None


def test_the_app_identity_holds_exactly_the_roles_it_needs() -> None:
    roles = value_of(declarations(ROLE_ASSIGNMENTS, "variable")["roles"])
    assert roles is not None
    defined = {literal(v) for v in entries(roles).values()}
    assert defined == EXPECTED_ROLES
    app_roles = set()
    for kind, body in resources(ROLE_ASSIGNMENTS):
        if kind.startswith("Microsoft.Authorization/roleAssignments@") and \
                text(prop(body, "properties", "principalId")) == "appPrincipalId":
            called = call(prop(body, "properties", "roleDefinitionId"))
            assert called is not None and called[0] == "subscriptionResourceId", text(body)[:120]
            app_roles.add(resolve_role(roles, called[1][-1]))
    assert app_roles == EXPECTED_ROLES


def _app_assignments() -> dict[str, tuple[str, str]]:
    """role id -> (scope, condition) of every role assignment to the app's identity."""
    roles = value_of(declarations(ROLE_ASSIGNMENTS, "variable")["roles"])
    assert roles is not None
    found = {}
    for declaration in declarations(ROLE_ASSIGNMENTS, "resource").values():
        body = value_of(declaration)
        assert body is not None
        if not literal(kids(declaration)[1] or "").startswith("Microsoft.Authorization/roleAssignments@") or \
                text(prop(body, "properties", "principalId")) != "appPrincipalId":
            continue
        called = call(prop(body, "properties", "roleDefinitionId"))
        assert called is not None
        conditions = [text(kids(c)[0]) for c in kids(declaration) if c.type == "if_statement"]
        role = resolve_role(roles, called[1][-1])
        assert role is not None
        found[role] = (text(prop(body, "scope")), conditions[0] if conditions else "")
    return found


def test_the_data_key_key_and_the_secrets_are_reached_by_separate_narrow_roles() -> None:
    """A leaked app identity can unwrap data keys with the one key (never read its private part, sign,
    or use another key) and read the app's secrets; it writes or deletes secrets only while the
    migration from per-connection secrets runs (docs/security.md, "Reach of one leaked identity")."""
    assigned = _app_assignments()
    crypto_user, secrets_user, secrets_officer = ("e147488a-f6f5-4113-8e2d-b22465e65bf6",
                                                  "4633458b-17de-408a-b874-0445c86b69e6",
                                                  "b86a8fe4-44ce-4948-aee5-eccb2c155cd7")
    assert assigned[crypto_user] == ("tokenCacheKey", "")  # on the key, always
    declared = declarations(ROLE_ASSIGNMENTS, "resource")["tokenCacheKey"]
    assert "Microsoft.KeyVault/vaults/keys@" in text(declared) and "existing" in text(declared)
    # Exactly one of the two secrets roles in any deployment: Officer while migrating, else User.
    assert assigned[secrets_officer] == ("vault", "(migrateVaultTokenCaches)")
    assert assigned[secrets_user] == ("vault", "(!migrateVaultTokenCaches)")
    # Nothing else on the vault or its keys.
    assert {r for r, (scope, _) in assigned.items() if scope in ("vault", "tokenCacheKey")} == \
        {crypto_user, secrets_user, secrets_officer}
    # The key only wraps and unwraps and cannot be exported.
    key = resource_of_type(INFRA / "modules" / "key-vault.bicep", "Microsoft.KeyVault/vaults/keys")
    assert sorted(literal(o) for o in kids(prop(key, "properties", "keyOps"))) == ["unwrapKey", "wrapKey"]
    assert text(prop(key, "properties", "attributes", "exportable")) == "false"
    assert literal(prop(key, "properties", "rotationPolicy", "lifetimeActions")) is None  # a list: rotates


def test_tables_and_queues_match_the_code() -> None:
    variables = declarations(MAIN, "variable")
    tables = value_of(variables["tableNames"])
    queues = value_of(variables["queueNames"])
    assert tables is not None and queues is not None
    assert {literal(n) for n in kids(tables)} == set(TABLES) | set(KEY_TABLES)
    assert {literal(n) for n in kids(queues)} == set(QUEUES)


def test_azure_yaml_deploys_the_repo_as_the_tagged_function_app() -> None:
    lines = (REPO / "azure.yaml").read_text().splitlines()
    start = lines.index("services:")
    services = [line.strip().rstrip(":") for line in lines[start + 1:] if re.fullmatch(r"  \w[\w-]*:", line)]
    assert len(services) == 1
    body = value_of(declarations(MAIN, "module")["functionApp"])
    assert body is not None and literal(prop(body, "params", "serviceName")) == services[0]
    assert {"    host: function", "    language: python", "    project: ."} <= set(lines)


def test_deploying_guide_names_the_secrets_redirect_path_and_permissions() -> None:
    guide = (REPO / "docs" / "deploying.md").read_text()
    for needed in (SETTINGS["OUTLOOK_CLIENT_SECRET_NAME"], SETTINGS["AGENT_API_KEY_SECRET_NAME"],
                   "/api/outlook/callback", "Calendars.Read", "User.Read", "offline_access", "openid",
                   "email", "azd up", "/api/health"):
        assert needed and needed in guide, needed
    for env in re.findall(r"\$\{([A-Z0-9_]+)", (INFRA / "main.parameters.json").read_text()):
        if not env.startswith("AZURE_"):
            assert env in guide, f"docs/deploying.md does not say how to set {env}"


# ---------------------------------------------------------------------------------------------------
# Access to users' token caches (issue 15)
# ---------------------------------------------------------------------------------------------------


def test_the_graph_extension_is_pinned() -> None:
    declared = {path.name: [line for line in path.read_text().splitlines() if line.startswith("extension ")]
                for path in BICEP_FILES}
    assert {name for name, lines in declared.items() if lines} == {"app-registration-trust.bicep"}
    assert all(GRAPH_EXTENSION.match(line) for lines in declared.values() for line in lines), declared


def test_with_a_managed_identity_the_app_registration_trusts_the_apps_identity_instead_of_a_secret() -> None:
    """The federated identity credential (learn.microsoft.com/entra/workload-id/
    workload-identity-federation-config-app-trust-managed-identity): issuer the tenant's v2.0 authority,
    subject the Function App identity's principal id, audience api://AzureADTokenExchange; deployed only
    when the app authenticates with that identity."""
    trust_file = INFRA / "modules" / "app-registration-trust.bicep"
    fic = resource_of_type(trust_file, "Microsoft.Graph/applications/federatedIdentityCredentials")
    assert [literal(a) for a in kids(prop(fic, "audiences"))] == ["api://AzureADTokenExchange"]
    assert text(prop(fic, "subject")) == "identityPrincipalId"
    assert text(prop(fic, "issuer")) == "'${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'"
    declared = declarations(MAIN, "module")["appRegistrationTrust"]
    conditions = [text(kids(c)[0]) for c in kids(declared) if c.type == "if_statement"]
    assert conditions == ["(outlookClientCredential == 'managed_identity' && !empty(outlookAppUniqueName))"]
    body = value_of(declared)
    assert body is not None and text(prop(body, "params", "identityPrincipalId")) == "identity.outputs.principalId"
    # The function app runs as that same identity, and AZURE_CLIENT_ID names it for the assertion.
    app = value_of(declarations(MAIN, "module")["functionApp"])
    assert app is not None and text(prop(app, "params", "identityClientId")) == "identity.outputs.clientId"
    assert "AZURE_CLIENT_ID" in app_settings()


def test_nobody_but_the_app_holds_a_vault_data_role_unless_the_operator_opts_in() -> None:
    params = declarations(MAIN, "parameter")
    opt_in = value_of(params["grantOperatorSecretsAccess"])
    assert opt_in is not None and literal(opt_in) == "false"
    body = value_of(declarations(MAIN, "module")["roleAssignments"])
    assert body is not None
    granted = prop(body, "params", "operatorPrincipalId")
    assert text(granted).replace(" ", "") == "grantOperatorSecretsAccess?principalId:''"
    assert json.loads((INFRA / "main.parameters.json").read_text())["parameters"]["grantOperatorSecretsAccess"][
        "value"] == "${GRANT_OPERATOR_SECRETS_ACCESS=false}"


def test_every_vault_operation_is_audited_in_log_analytics() -> None:
    vault_module = INFRA / "modules" / "key-vault.bicep"
    settings = [body for kind, body in resources(vault_module)
                if kind.startswith("Microsoft.Insights/diagnosticSettings@")]
    assert len(settings) == 1
    assert text(prop(settings[0], "scope")) == "vault"
    logs = kids(prop(settings[0], "properties", "logs"))
    assert [literal(prop(entry, "categoryGroup")) for entry in logs] == ["audit"]
    assert literal(prop(logs[0], "enabled")) == "true"
    body = value_of(declarations(MAIN, "module")["keyVault"])
    assert body is not None and text(prop(body, "params", "logAnalyticsWorkspaceId")) == \
        "monitoring.outputs.logAnalyticsId"


def test_the_page_token_convenience_is_never_deployed() -> None:
    assert "PAGE_TOKEN_FROM_URL" not in app_settings()


def test_the_http_function_group_keeps_an_instance_ready_for_graphs_validation_handshake() -> None:
    """Graph validates a notification URL within 10 s and wants notifications answered within 3 s
    (learn.microsoft.com/graph/change-notifications-delivery-webhooks); a Flex Consumption cold start
    can take longer, so the HTTP group has an always-ready instance by default (docs/reliability.md)."""
    param = declarations(FUNCTION_APP, "parameter")["httpAlwaysReady"]
    default = value_of(param)
    assert default is not None and int(text(default)) >= 1
    app = resource_of_type(FUNCTION_APP, "Microsoft.Web/sites")
    ready = text(prop(app, "properties", "functionAppConfig", "scaleAndConcurrency", "alwaysReady"))
    assert "'http'" in ready and "httpAlwaysReady" in ready


FRONT_DOOR = INFRA / "modules" / "front-door.bicep"


def test_rate_limits_by_address_are_deployed_at_the_edge_and_the_app_behind_it_is_reachable_only_through_it() -> None:
    """docs/security.md "Rate limits by address": Front Door's WAF counts requests per client socket
    address (sign-in starts and callbacks per 5 minutes, the rest of /api per minute, Graph's
    notifications and the agent platform's statuses exempt), blocks with 429; the Function App then
    accepts only that profile's traffic (X-Azure-FDID), so the limits cannot be walked around."""
    waf = resource_of_type(FRONT_DOOR, "Microsoft.Network/FrontDoorWebApplicationFirewallPolicies")
    settings = text(prop(waf, "properties", "policySettings"))
    assert "'Prevention'" in settings and "customBlockResponseStatusCode: 429" in settings
    rules = text(prop(waf, "properties", "customRules"))
    for name in ("SignInsPerAddress", "ApiPerAddress"):
        assert f"'{name}'" in rules
    assert rules.count("'RateLimitRule'") == 2 and rules.count("'SocketAddr'") == 2
    assert "'/api/outlook/connect'" in rules and "negateCondition: true" in rules
    exempt = text(value_of(declarations(FRONT_DOOR, "variable")["exempt"]))
    assert "'RegEx'" in rules  # on the path: a query string naming an exempt path walks around nothing
    [pattern] = re.findall(r"'([^']+)'", exempt)
    pattern = pattern.replace("\\\\", "\\")  # Bicep's escaped backslash
    for path in ("/api/outlook/notifications?connection=c1", "/api/outlook/notifications/lifecycle?connection=c",
                 "https://outlook.example.com/api/agents/status"):
        assert re.search(pattern, path), path
    for path in ("/api/outlook/connections?x=/api/agents/status", "/api/meetings/upcoming",
                 "/api/outlook/notificationsx"):
        assert not re.search(pattern, path), path
    # Off unless a custom domain is given; when on, the public URLs use it and the app only takes Front Door's.
    main = (INFRA / "main.bicep").read_text()
    assert "param frontDoorHostName string = ''" in main
    assert "module frontDoor 'modules/front-door.bicep' = if (!empty(frontDoorHostName))" in main
    assert "var outlookRedirectUri = '${publicUrl}/api/outlook/callback'" in main
    app = text(prop(resource_of_type(FUNCTION_APP, "Microsoft.Web/sites"), "properties", "siteConfig"))
    assert "'AzureFrontDoor.Backend'" in app and "'x-azure-fdid'" in app
    assert "ipSecurityRestrictionsDefaultAction: empty(frontDoorId) ? 'Allow' : 'Deny'" in app
