"""Input every engine stores alike: no NUL characters in text (PostgreSQL refuses them, SQLite
keeps them), checked once at the edge and again where text arrives without the HTTP edge."""

from __future__ import annotations

from typing import Any

from hub.errors import BadRequest


def nul_path(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) in `value` holding a NUL character, else None."""
    if isinstance(value, str):
        return (path or "value") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            # The path goes into an error message: never echo the NUL itself.
            shown = str(key).replace("\x00", "\\u0000")
            where = f"{path}.{shown}" if path else shown
            if isinstance(key, str) and "\x00" in key:
                return where
            if (found := nul_path(item, where)) is not None:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            if (found := nul_path(item, f"{path}[{i}]")) is not None:
                return found
    return None


def refuse_nul(value: Any, path: str = "") -> None:
    if (where := nul_path(value, path)) is not None:
        raise BadRequest(f"{where}: NUL characters (\\u0000) are not allowed")
