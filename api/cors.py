"""CORS for browser clients of the API and the live event stream (HUB_CORS_ORIGINS)."""

from __future__ import annotations

from litestar.config.cors import CORSConfig

from hub.settings import Settings


def cors_config(settings: Settings) -> CORSConfig | None:
    """Litestar's CORS for the configured origins; None (CORS off) when none are.

    Tokens travel in `Authorization` (or `?token=` for `EventSource`); credentials stay off, so
    no other origin can use the inbox's session cookie (api/inbox/session.py) through CORS."""
    origins = settings.resolved_cors_origins
    if not origins:
        return None
    return CORSConfig(
        allow_origins=origins,
        allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After"],
        max_age=600,
    )
