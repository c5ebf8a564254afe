"""The OpenAPI document: Litestar's, with every error response documented as the hub's envelope."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Litestar

# Private module, public class: the cached document lives there (litestar is pinned below 3).
from litestar._openapi.plugin import OpenAPIPlugin

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
    """Adds `not: {pattern: NUL}` to every free-text string schema of the document, in place."""
    if isinstance(node, dict):
        if node.get("type") == "string" and not ({"enum", "const", "format"} & node.keys()):
            node["not"] = NO_NUL
        for value in node.values():
            document_no_nul(value)
    elif isinstance(node, list):
        for value in node:
            document_no_nul(value)


def install(app: Litestar) -> None:
    """Patches the cached document once, at startup, before anyone can read it."""
    schema = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    document_errors(schema)
    document_no_nul(schema)
