"""Process logging: one JSON object per line (HUB_LOG_FORMAT=json) or text, with the request id
and the customer, conversation and message ids of what is being handled."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from hub.settings import Settings

# Ids of what this request or task handles. A dict per request, so a dependency resolved in a
# child task can add the customer id and the handler still sees it.
_context: ContextVar[dict[str, Any] | None] = ContextVar("hub_log_context", default=None)

# Record attributes (from `extra=` or the context) that go into a JSON line when present.
FIELDS = (
    "request_id",
    "customer_id",
    "account_id",
    "conversation_id",
    "message_id",
    "activeflow_id",
    "workflow_id",
    "method",
    "route",
    "status",
    "outcome",
    "duration_ms",
    "channel",
    "duplicate",
    "attempt",
)
FORMATS = ("json", "text")


def new_scope(**ids: Any) -> None:
    """Starts the ids of one request (called once per request, in its task)."""
    _context.set({k: v for k, v in ids.items() if v is not None})


def bind(**ids: Any) -> None:
    """Adds ids to the current request's scope (no-op outside one)."""
    scope = _context.get()
    if scope is not None:
        scope.update({k: v for k, v in ids.items() if v is not None})


@contextlib.contextmanager
def scope(**ids: Any) -> Iterator[None]:
    """Ids for the log lines of a block (a background round, an activity)."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in ids.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the scope's ids onto each record (explicit `extra=` values win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value if isinstance(value, int | float | bool) else str(value)
        # The Temporal SDK puts its workflow and activity details on records as dicts.
        for key in ("temporal_workflow", "temporal_activity"):
            details = getattr(record, key, None)
            if isinstance(details, dict):
                line.setdefault("workflow_id", details.get("workflow_id"))
                if "activity_type" in details:
                    line["activity"] = details["activity_type"]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def resolved_format(settings: Settings, default: str = "json") -> str:
    chosen = (settings.log_format or default).strip().lower()
    if chosen not in FORMATS:
        raise ValueError(f"HUB_LOG_FORMAT must be json or text, got {settings.log_format!r}")
    return chosen


def configure(settings: Settings, default_format: str = "json") -> None:
    """The root handler of this process (stderr), in the chosen format, at HUB_LOG_LEVEL."""
    handler = logging.StreamHandler(sys.stderr)
    if resolved_format(settings, default_format) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())
    # Chatty libraries: their INFO lines carry URLs and SQL, not what an operator needs.
    for name in ("piccolo", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
