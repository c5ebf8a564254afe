"""The error envelope {"error": {status, reason, message, request_id}} for every failure."""

from __future__ import annotations

import errno
import logging
import socket
import sqlite3
import uuid
from http import HTTPStatus

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import ASGIApp, Receive, Scope, Send

from api import temporal
from hub.errors import HubError, TooManyRequests

log = logging.getLogger("hub.api")

# Failures that mean "the database is not reachable right now", not "the request is bad".
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    # Admin or crash shutdown, cancelled by a restart: the server is going away, not the input bad.
    asyncpg.exceptions.OperatorInterventionError,
)
# An OSError is an outage only when it is about reaching a server; a missing file is a bug.
UNAVAILABLE_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EHOSTDOWN,
    errno.ENETDOWN,
    errno.EPIPE,
    errno.EADDRNOTAVAIL,
}
# SQLite's OperationalError is also "no such table" or a syntax error: server bugs, not outages.
SQLITE_UNAVAILABLE = (
    "database is locked",
    "database table is locked",
    "unable to open database",
    "disk i/o error",
    "database or disk is full",
)


def is_unavailable(exc: BaseException) -> bool:
    """A backing service cannot be reached now (retry later), as opposed to a bug in the hub."""
    if isinstance(exc, UNAVAILABLE_ERRORS) or temporal.is_unavailable(exc):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return any(text in str(exc).lower() for text in SQLITE_UNAVAILABLE)
    if isinstance(exc, OSError):
        # asyncio reports a connect that failed on every address as a plain OSError.
        return exc.errno in UNAVAILABLE_ERRNOS or str(exc).startswith(("Multiple exceptions", "Connect call"))
    return False


# Values the database refuses (NUL characters in text, out-of-range times or numbers): the input
# is bad, not the service. asyncpg's client-side DataError is an InterfaceError, so test these first.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg_base.DataError,
)


def request_id_of(request: Request) -> str:
    # Requests that match no route never pass the middleware; they get an id here.
    state = request.scope.setdefault("state", {})
    return state.setdefault("request_id", uuid.uuid4().hex)


def envelope(request: Request, status: int, message: str, reason: str | None = None) -> Response:
    reason = reason or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    return Response(
        {
            "error": {
                "status": status,
                "reason": reason,
                "message": message,
                "request_id": request_id_of(request),
            }
        },
        status_code=status,
        headers={"X-Request-ID": request_id_of(request)},
    )


def _validation_message(exc: ValidationException) -> str:
    details = exc.extra if isinstance(exc.extra, list) else []
    parts = []
    for item in details:
        if isinstance(item, dict):
            key = item.get("key")
            msg = item.get("message", "")
            parts.append(f"{key}: {msg}" if key else str(msg))
    detail = "; ".join(p for p in parts if p)
    return f"{exc.detail}: {detail}" if detail else str(exc.detail)


def handle_hub_error(request: Request, exc: HubError) -> Response:
    response = envelope(request, exc.status, exc.message, exc.reason)
    if isinstance(exc, TooManyRequests):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    elif exc.status == 503:
        response.headers["Retry-After"] = "1"
    return response


def handle_http_exception(request: Request, exc: HTTPException) -> Response:
    if isinstance(exc, ValidationException):
        return envelope(request, 400, _validation_message(exc), "bad_request")
    response = envelope(request, exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def handle_unavailable(request: Request, exc: Exception) -> Response:
    log.warning(
        "backing service unavailable (request %s): %s: %s",
        request_id_of(request),
        exc.__class__.__name__,
        exc,
        exc_info=exc,
    )
    response = envelope(request, 503, "a backing service is unavailable, retry later", "service_unavailable")
    response.headers["Retry-After"] = "1"
    return response


def handle_unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BAD_INPUT_ERRORS):
        # The database's message can quote the value (message text): only at debug level.
        log.info("database refused a value: %s", exc.__class__.__name__)
        log.debug("database refused a value: %s", exc)
        return envelope(request, 400, "a value in the request cannot be stored", "bad_request")
    if isinstance(exc, RecursionError) and "deserializ" in str(exc):
        # msgspec gives up on absurdly nested JSON with a RecursionError.
        return envelope(request, 400, "JSON is malformed: nested too deeply", "bad_request")
    if is_unavailable(exc):
        return handle_unavailable(request, exc)
    log.exception("unhandled error (request %s)", request_id_of(request))
    return envelope(request, 500, "internal error", "internal_error")


EXCEPTION_HANDLERS = {
    HubError: handle_hub_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Gives every request an id (the caller's X-Request-ID when sane) for logs and errors."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
            request_id = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
            scope.setdefault("state", {})["request_id"] = request_id
        await app(scope, receive, send)

    return middleware
