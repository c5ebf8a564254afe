"""The OpenAPI document: Litestar's, with every error response documented as the hub's envelope."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

# Private module, public class: the cached document lives there (litestar is pinned below 3).
from litestar._openapi.plugin import OpenAPIPlugin

from api.schemas import PayloadsJSON, Tag
from hub.actions import OPTION_TYPES

REF = "#/components/schemas/{name}"
ERROR_DESCRIPTIONS = {
    "400": "Bad input: malformed JSON, wrong types, unknown values, over-long strings, bad UUIDs",
    "401": "Missing, invalid or expired token (hooks: bad or missing provider signature)",
    "403": "The caller's permission does not allow this",
    "404": "No such object for this customer",
    "409": "Conflicts with the current state",
    "413": "Too large: an email with more than 10 attachments, or one over 10 MB",
    "429": "Too many attempts; retry after the Retry-After header's seconds",
    "503": "A backing service (database, Temporal) is unavailable; retry",
}
UNAUTHENTICATED = ("/auth/login",)
# Authenticated by something else than the bearer token (a provider signature).
SIGNED = ("/v1.0/hooks/",)
# Answers particular to one operation, beyond those every operation of its kind gets.
OPERATION_ERRORS = {
    ("post", "/auth/login"): {"401", "429"},
    ("post", "/v1.0/agents"): {"409"},
    ("post", "/v1.0/activeflows/{activeflow_id}/stop"): {"409"},
    ("get", "/v1.0/activeflows"): {"404"},
    ("post", "/v1.0/conversations/{conversation_id}/messages"): {"409"},
    ("post", "/v1.0/conversations/{conversation_id}/participants"): {"409"},
    ("delete", "/v1.0/conversations/{conversation_id}/participants/{participant_id}"): {"409"},
    ("post", "/v1.0/hooks/accounts/{account_id}"): {"413"},
    ("post", "/v1.0/contacts"): {"409"},
    ("put", "/v1.0/contacts/{contact_id}"): {"409"},
    ("post", "/v1.0/conversations/{conversation_id}/reopen"): {"409"},
    ("delete", "/v1.0/conversation_messages/{message_id}"): {"409"},
}


class ErrorBody(msgspec.Struct):
    status: int
    reason: str
    message: str
    request_id: str


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


def _error_response(code: str) -> dict[str, Any]:
    return {
        "description": ERROR_DESCRIPTIONS.get(code, "Error"),
        "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorEnvelope")}}},
    }


def document_errors(schema: dict[str, Any]) -> None:
    """Rewrites error responses in place to the envelope every handler really answers with."""
    _, components = msgspec.json.schema_components([ErrorEnvelope], ref_template=REF)
    schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            responses = operation.setdefault("responses", {})
            codes = {code for code in responses if code.startswith(("4", "5"))} | {"400", "503"}
            if path not in UNAUTHENTICATED:
                codes |= {"401"}
                if "/hooks/" not in path:
                    codes |= {"403"}
            if "{" in path:
                codes |= {"404"}
            codes |= OPERATION_ERRORS.get((method, path), set())
            for code in codes:
                responses[code] = _error_response(code)


# No text the API takes may hold a NUL character (api.strict): every string schema says so.
NO_NUL = {"pattern": "\\x00"}


def document_no_nul(node: Any) -> None:
    """Adds `not: {pattern: NUL}` to every free-text string schema of the document and to the keys
    of every map, in place."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not ({"enum", "const", "format"} & node.keys()):
            node["not"] = NO_NUL
        # A struct's unknown fields are ignored, whatever they hold; a map's keys are read.
        is_map = "properties" not in node and node.get("additionalProperties", True) is not False
        if node.get("type") == "object" and is_map:
            node["propertyNames"] = {"not": NO_NUL}
        for value in node.values():
            document_no_nul(value)
    elif isinstance(node, list):
        for value in node:
            document_no_nul(value)


def _component_name(action_type: str) -> str:
    return "".join(part.title() for part in action_type.split("_")) + "Action"


def document_actions(schema: dict[str, Any]) -> None:
    """Flow actions as the tagged union they are: one variant per `type` with the schema of its
    `option` (hub.actions checks the option against its type on write, with a 400 naming the
    action). Derived from hub.actions.OPTION_TYPES, so a new action type is documented by itself."""
    components = schema["components"]["schemas"]
    written = components["ActionIn"]["properties"]
    _, options = msgspec.json.schema_components(list(OPTION_TYPES.values()), ref_template=REF)
    components.update(options)
    mapping = {}
    for action_type, option_type in OPTION_TYPES.items():
        name = _component_name(action_type)
        required = ["id", "type"] + (["option"] if options[option_type.__name__].get("required") else [])
        components[name] = {
            "type": "object",
            "title": name,
            "properties": {
                "id": written["id"],
                "type": {"type": "string", "enum": [action_type]},
                "option": {"$ref": REF.format(name=option_type.__name__)},
                "next_id": written["next_id"],
            },
            "required": required,
        }
        mapping[action_type] = REF.format(name=name)
    for name, description in (
        ("ActionIn", "An action of a flow; `option` depends on `type`"),
        ("ActionOut", "An action of a flow as stored: `option` with its defaults filled in"),
    ):
        components[name] = {
            "title": name,
            "description": description,
            "oneOf": [{"$ref": ref} for ref in mapping.values()],
            "discriminator": {"propertyName": "type", "mapping": dict(mapping)},
        }


PERMISSIONS = [0, 32, 64, 96]
EVENT_STREAM = {
    "type": "object",
    "description": "One Server-Sent Event: `id` the event sequence number, `event` its type, `data` "
    '`{"type", "timestamp", "data"}` as JSON',
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
        "retry": {"type": "integer"},
    },
    "required": ["data", "event"],
}


def _json_body(struct: type[msgspec.Struct], schema: dict[str, Any]) -> dict[str, Any]:
    _, components = msgspec.json.schema_components([struct], ref_template=REF)
    schema["components"]["schemas"].update(components)
    return {"application/json": {"schema": {"$ref": REF.format(name=struct.__name__)}}}


def document_bodies(schema: dict[str, Any]) -> None:
    """Bodies that handlers read themselves (no `data` parameter for Litestar to describe), the
    event stream's media type, and who needs no bearer token."""
    paths = schema["paths"]
    for path in ("/codec/decode", "/codec/encode"):
        operation = paths[path]["post"]
        operation["requestBody"] = {"required": True, "content": _json_body(PayloadsJSON, schema)}
        operation["responses"]["200"]["content"] = _json_body(PayloadsJSON, schema)
    events = paths["/v1.0/events"]["get"]["responses"]["200"]
    events["content"] = {"text/event-stream": {"schema": EVENT_STREAM}}
    for path, operations in paths.items():
        for operation in operations.values():
            if path in UNAUTHENTICATED or path.startswith(SIGNED):
                operation["security"] = []
            if path.startswith(SIGNED):
                operation["responses"]["200"]["content"] = {
                    "application/xml": {"schema": {"type": "string", "description": "SMS: empty TwiML"}},
                    "application/json": {"schema": {"type": "object", "description": "LINE: {}"}},
                }
    components = schema["components"]["schemas"]
    components["AgentOut"]["properties"]["permission"]["enum"] = list(PERMISSIONS)


NULL = {"type": "null"}


def document_parameters(schema: dict[str, Any]) -> None:
    """A query or header parameter is a string or absent, never JSON null: Litestar documents an
    optional one as `oneOf: [..., {"type": "null"}]` (or an enum with null), which clients would
    send as the text "null"."""
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                node = parameter.get("schema", {})
                if None in node.get("enum", []):
                    node["enum"] = [value for value in node["enum"] if value is not None]
                branches = node.get("oneOf")
                if not branches or NULL not in branches:
                    continue
                rest = [b for b in node.pop("oneOf") if b != NULL]
                if len(rest) == 1:
                    node.update(rest[0])
                else:
                    node["oneOf"] = rest


def document_tags(schema: dict[str, Any]) -> None:
    """Litestar drops the constraints of list items and of path parameters: a tag's rules are put
    back wherever a tag goes (bodies' `tags` items, the `tag` path and query parameters)."""
    tag = msgspec.json.schema(Tag)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("TagsAdd", "ConversationUpdate"):
        node = components.get(name, {}).get("properties", {}).get("tags")
        for branch in [node, *((node or {}).get("oneOf") or [])]:
            if isinstance(branch, dict) and branch.get("type") == "array":
                branch["items"] = dict(tag)
    for operations in schema["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "tag":
                    parameter["schema"] = dict(tag)


def document_patterns(node: Any) -> None:
    """Python patterns end in `\\Z` (a `$` there also matches before a final newline); JSON
    Schema's ECMA `$` already means the end of the text."""
    if isinstance(node, dict):
        pattern = node.get("pattern")
        if isinstance(pattern, str) and pattern.endswith("\\Z"):
            node["pattern"] = pattern[:-2] + "$"
        for value in node.values():
            document_patterns(value)
    elif isinstance(node, list):
        for value in node:
            document_patterns(value)


def install(app: Litestar) -> None:
    """Patches the cached document once, at startup, before anyone can read it."""
    schema = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    document_actions(schema)
    document_bodies(schema)
    document_parameters(schema)
    document_tags(schema)
    document_patterns(schema)
    document_errors(schema)
    document_no_nul(schema)
