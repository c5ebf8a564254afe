"""The inbox's browser session: the JWT in an HttpOnly, SameSite=Strict cookie, accepted by the API
in place of a bearer token; CSRF (Litestar's double-submit token) and a same-origin rule for every
state-changing request the cookie authenticates; the security headers of the inbox's pages.

Requests with `Authorization` or `?token=` (the API's clients, provider hooks, the codec) never
meet the CSRF check: the middleware only looks at requests the cookie would authenticate."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.csrf import CSRFMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from hub.settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrftoken"
# Where the middleware leaves the cookie's JWT once the request may use it (scope state).
ACCEPTED = "hub_session_token"
# A route opt: the inbox's own pages and forms (CSRF always applies, cookie or not).
INBOX_OPT = "inbox"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # Medias are shown inline from https URLs and the hub's own /v1.0/media.
        "img-src 'self' https:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def secure_cookies(settings: Settings) -> bool:
    """Cookies are `Secure` (and `__Host-` prefixed) when the hub is served over https."""
    return settings.resolved_public_url.startswith("https://")


def session_cookie_name(settings: Settings) -> str:
    return "__Host-hub_session" if secure_cookies(settings) else "hub_session"


def csrf_cookie_name(settings: Settings) -> str:
    return "__Host-hub_csrf" if secure_cookies(settings) else "hub_csrf"


def csrf_config(settings: Settings) -> CSRFConfig:
    # Derived from the JWT secret: one secret to manage, and every replica signs alike.
    secret = hmac.new(settings.jwt_secret.encode(), b"hub inbox csrf", hashlib.sha256).hexdigest()
    return CSRFConfig(
        secret=secret,
        cookie_name=csrf_cookie_name(settings),
        header_name=CSRF_HEADER,
        # The page reads the token from its <meta>, so scripts never need the cookie.
        cookie_httponly=True,
        cookie_samesite="strict",
        cookie_secure=secure_cookies(settings),
        cookie_path="/",
    )


def session_cookie(settings: Settings, token: str) -> Cookie:
    return Cookie(
        key=session_cookie_name(settings),
        value=token,
        path="/",
        max_age=settings.jwt_ttl_seconds,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )


def cleared_session_cookie(settings: Settings) -> Cookie:
    return Cookie(
        key=session_cookie_name(settings),
        value="",
        path="/",
        max_age=0,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(settings),
    )


def accepted_token(scope: Scope) -> str | None:
    """The session cookie's JWT when the middleware let this request use it."""
    return scope.get("state", {}).get(ACCEPTED)


def _cookies(raw: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name not in found:
            found[name] = value
    return found


def same_origin(headers: dict[str, str], method: str) -> bool:
    """Whether a request comes from a page of this origin. Browsers say so in `Sec-Fetch-Site`;
    older ones send `Origin` on state-changing requests. Ports of one host are the same *site*
    (SameSite lets the cookie through from another port), so the cookie alone is not enough."""
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin" or (method in SAFE_METHODS and site == "none")
    origin = headers.get("origin")
    if origin is not None:
        return origin != "null" and urlsplit(origin).netloc == headers.get("host", "")
    return method in SAFE_METHODS


class SessionCSRFMiddleware(CSRFMiddleware):
    """Litestar's CSRF middleware, applied to the inbox's routes and to API requests that carry
    the session cookie and no other credential; everything else passes untouched."""

    def __init__(self, app: ASGIApp, config: CSRFConfig, session_cookie: str) -> None:
        super().__init__(app, config)
        self.session_cookie = session_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        handler: Any = scope.get("route_handler")
        inbox = bool(handler is not None and handler.opt.get(INBOX_OPT))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        cookie = _cookies(headers.get("cookie", "")).get(self.session_cookie)
        uses_cookie = (
            bool(cookie)
            and handler is not None
            and "caller" in handler.parsed_fn_signature.parameters
            and "authorization" not in headers
            and not any(k == "token" for k, _ in parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        )
        if not (inbox or uses_cookie):
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in SAFE_METHODS and not same_origin(headers, method):
            raise PermissionDeniedException(
                "the session cookie is accepted only on requests from the hub's own pages; "
                "other clients send 'Authorization: Bearer <token>'"
            )
        if cookie:
            scope.setdefault("state", {})[ACCEPTED] = cookie
        await super().__call__(scope, receive, send)
