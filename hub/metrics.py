"""What the hub counts (Prometheus metrics); exposed by the API's /metrics and the worker's port.

Labels are bounded sets (channel, outcome, status, route template), never ids or raw paths."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

INBOUND_MESSAGES = Counter(
    "hub_inbound_messages",
    "Inbound provider messages, by channel and outcome (stored, duplicate, rejected)",
    ["channel", "outcome"],
)
OUTBOUND_MESSAGES = Counter(
    "hub_outbound_messages",
    "Attempts to hand an outgoing message to its provider, by channel and outcome (done, failed, retried)",
    ["channel", "outcome"],
)
ACTIVEFLOW_STARTS = Counter(
    "hub_activeflow_starts",
    "Activeflow workflow starts, by outcome (started, duplicate, unavailable)",
    ["outcome"],
)
ACTIVEFLOW_ENDS = Counter(
    "hub_activeflow_ends",
    "Activeflow runs recorded as finished, by status (ended, failed, stopped)",
    ["status"],
)
WEBHOOK_ATTEMPTS = Counter(
    "hub_webhook_attempts",
    "Webhook delivery attempts, by outcome (delivered, failed)",
    ["outcome"],
)
CONVERSATIONS_CLOSED = Counter(
    "hub_conversations_closed",
    "Conversations closed, by reason (api, flow, inactivity)",
    ["reason"],
)
INBOUND_GROUP_COMMIT = Histogram(
    "hub_inbound_group_commit_messages",
    "Inbound messages to conversations that start no flow written per commit (PostgreSQL group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
HTTP_REQUEST_DURATION = Histogram(
    "hub_http_request_duration_seconds",
    "API request latency, by method, route template and status code",
    ["method", "route", "status"],
)


def inbound(channel: str, outcome: str) -> None:
    INBOUND_MESSAGES.labels(channel=channel, outcome=outcome).inc()


def outbound(channel: str, outcome: str) -> None:
    OUTBOUND_MESSAGES.labels(channel=channel, outcome=outcome).inc()


def activeflow_start(outcome: str) -> None:
    ACTIVEFLOW_STARTS.labels(outcome=outcome).inc()


def activeflow_end(status: str) -> None:
    ACTIVEFLOW_ENDS.labels(status=status).inc()


_WEBHOOK_ATTEMPTS_BY_OUTCOME = {
    outcome: WEBHOOK_ATTEMPTS.labels(outcome=outcome) for outcome in ("delivered", "failed")
}


def webhook_attempt(outcome: str) -> None:
    # The children looked up once: this runs for every post.
    (_WEBHOOK_ATTEMPTS_BY_OUTCOME.get(outcome) or WEBHOOK_ATTEMPTS.labels(outcome=outcome)).inc()


def conversations_closed(reason: str, count: int = 1) -> None:
    CONVERSATIONS_CLOSED.labels(reason=reason).inc(count)
