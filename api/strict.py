"""Strict input at the edge, before any handler runs: bodies decoded with msgspec's strict rules
(`32.0` or `"32"` is not an integer, `"true"` not a boolean) and no NUL characters in any string.

Litestar converts bodies with `strict=False` (it shares one conversion with query and path values,
which arrive as text); the handler's own body type is checked strictly here first."""

from __future__ import annotations

import types
from functools import lru_cache
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl

import msgspec
from litestar import Request
from litestar.params import ParameterKwarg

from hub.errors import BadRequest
from hub.strict import refuse_nul

FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
MULTIPART_FILES = "multipart_files"


@lru_cache(maxsize=256)
def _decoder(body_type: Any) -> msgspec.json.Decoder:
    return msgspec.json.Decoder(body_type, strict=True)


def _body_type(request: Request) -> Any:
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    return data.annotation if data is not None else None


async def strict_input(request: Request) -> None:
    """A `before_request` hook for routes without a caller (login, provider hooks); the others
    are checked once the caller is authenticated (api.deps), so a request without a token is
    401 whatever its body holds."""
    if "caller" not in request.route_handler.parsed_fn_signature.parameters:
        await check_input(request)


def _takes_text_null(annotation: Any) -> bool:
    """Whether the text "null" is a value of this type (a string, or a literal of that name)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes_text_null(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return any(_takes_text_null(arg) for arg in get_args(annotation))
    if origin is Literal:
        return "null" in get_args(annotation)
    return annotation in (str, Any)


@lru_cache(maxsize=256)
def _nullable_queries(handler: Any) -> frozenset[str]:
    names = set()
    for name, field in handler.parsed_fn_signature.parameters.items():
        kwarg = field.kwarg_definition
        if isinstance(kwarg, ParameterKwarg) and not (kwarg.header or kwarg.cookie):
            if field.is_optional and not _takes_text_null(field.annotation):
                names.add(kwarg.query or name)
    return frozenset(names)


def refuse_null_queries(request: Request) -> None:
    """Litestar reads the text `null` of an optional query parameter as None, as if it had not
    been sent: `?owner_id=null` would answer for every owner. It is a bad value instead."""
    nullable = _nullable_queries(request.route_handler)
    for key, value in request.query_params.multi_items():
        if value == "null" and key in nullable:
            raise BadRequest(f"query parameter {key!r}: null is not a value (leave the parameter out)")


async def check_input(request: Request) -> None:
    """400 for NUL characters anywhere, for `null` as a query value and for loosely typed bodies."""
    refuse_nul(dict(request.path_params), "path")
    if request.scope.get("query_string"):  # no query, nothing to check (parsing it is not free)
        refuse_nul(request.query_params.dict(), "query")
        refuse_null_queries(request)
    if request.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        return
    body = await request.body()
    if not body:
        return
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type == MULTIPART and request.route_handler.opt.get(MULTIPART_FILES):
        # Files hold any byte: a route taking multipart files (the email hook, marked with
        # opt={MULTIPART_FILES: True}) refuses NULs in its text fields itself.
        return
    if b"\x00" in body:
        raise BadRequest("the body contains NUL characters")
    if content_type == FORM:
        if b"%00" in body:
            refuse_nul(dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)), "form")
        return
    body_type = _body_type(request)
    try:
        # Fields only: unknown keys are ignored, whatever they hold.
        decoded = _decoder(body_type).decode(body) if body_type is not None else msgspec.json.decode(body)
        if b"\\u0000" in body:
            refuse_nul(msgspec.to_builtins(decoded), "body")
    except msgspec.ValidationError as exc:
        raise BadRequest(f"Validation failed for {request.method} {request.url.path}: {exc}") from exc
    except msgspec.DecodeError:
        return  # malformed JSON: the handler's own decoding answers 400 with its message
