"""The one settings object, read from HUB_* environment variables with embedded defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

# LINE's content host (line-openapi messaging-api.yml: servers of /v2/bot/message/{id}/content).
LINE_DATA_API_URL = "https://api-data.line.me"


def _env_bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


MIN_JWT_SECRET_BYTES = 32
# Secrets that appeared in this project's code or docs: anyone can forge tokens with them.
KNOWN_JWT_SECRETS = frozenset({"change-me-in-production-please-32b"})


@dataclass(frozen=True)
class Settings:
    data_dir: str = ".hub"
    # Empty means an SQLite file inside data_dir.
    database_url: str = ""
    # Empty means in-memory stores and channels.
    redis_url: str = ""
    # Empty means `hub run` starts a Temporal dev server.
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_task_queue: str = "hub"
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # API processes of `hub serve` (uvicorn workers sharing the port).
    http_workers: int = 1
    # Empty means http://{http_host}:{http_port}; providers sign requests to this base.
    public_url: str = ""
    # HS256 secret of the API tokens. No usable default: `hub serve` and `hub worker` refuse to
    # start without one; `hub run` keeps a random one in the data dir (see api/cli.py).
    jwt_secret: str = ""
    jwt_ttl_seconds: int = 7 * 24 * 3600
    # Failed logins allowed per username and per client address within the window (then 429).
    login_max_failures: int = 10
    login_max_failures_per_address: int = 100
    login_window_s: int = 15 * 60
    # Prefix of the keys the hub keeps in Redis: deployments (or test runs) sharing one Redis differ.
    redis_key_prefix: str = "hub:"
    db_pool_size: int = 10
    # Inbound messages to conversations that start no flow, written by group commit on
    # PostgreSQL (hub/group_commit.py): the ones arriving together share one statement and one
    # commit, at most this many (1: each message alone).
    inbound_group_commit_max: int = 64
    # Workflow tasks and local activities the worker runs at once (0: the Temporal SDK's 100).
    # A burst beyond them waits in Temporal's task queue: with the SDK's 100 a burst of new flow
    # runs shared one core so thinly that first workflow tasks (their local activities included)
    # outlived the 10 s workflow task timeout, and were run again (TMPRL1104, "Task not found").
    worker_workflow_tasks: int = 20
    worker_local_activities: int = 20
    # Provider API base URLs; empty means the embedded fake providers of `hub run`.
    sms_api_url: str = ""
    line_api_url: str = ""
    # LINE serves message content (images, video...) from its data host; empty means the fake
    # under `hub run` (no HUB_LINE_API_URL), else https://api-data.line.me.
    line_data_api_url: str = ""
    # Ports of the embedded parts `hub run` starts (Temporal dev server, its UI, fake providers).
    temporal_port: int = 7233
    temporal_ui_port: int = 8233
    fake_sms_port: int = 8701
    fake_line_port: int = 8702
    # The local SMTP sink (aiosmtpd) `hub run` starts for the demo email account; 0 = none.
    fake_smtp_port: int = 8725
    # Seconds each provider call may take before it counts as failed (and is retried).
    provider_timeout_s: int = 10
    # How often the worker looks for sends whose workflow never started (a crash, Temporal down).
    recovery_interval_s: int = 15
    # Failed workflow starts of one activeflow by recovery before the run is marked `failed`.
    recovery_max_start_attempts: int = 5
    # Retry schedule of sends whose provider is unavailable (5xx, timeouts).
    send_retry_initial_s: float = 1.0
    send_retry_max_interval_s: float = 300.0
    send_max_attempts: int = 20
    send_attempt_timeout_s: float = 30.0
    # Customer webhooks: one attempt may take this long (then it counts as failed).
    webhook_timeout_s: float = 5.0
    # Seconds before each retry of a failed delivery, comma-separated; exhausted means `failed`.
    webhook_retry_schedule_s: str = "5,300,1800,7200,18000,36000,36000"
    # Allow webhook targets on loopback, private and link-local addresses (tests, `hub run`).
    webhook_allow_private: bool = False
    # Delivery workflows (`webhook-shard-<n>`); a conversation always maps to the same one.
    webhook_shards: int = 4
    # Posts in flight per delivery shard, and per customer within a shard.
    webhook_concurrency: int = 64
    webhook_customer_concurrency: int = 16
    # How often the relay and the shards look for new work, and how long one activity round runs.
    webhook_poll_interval_s: float = 0.1
    webhook_round_s: float = 60.0
    # How often the inactivity sweep closes conversations quiet for longer than their customer's
    # `inactivity_close_s` (so a close lands at most this long after it is due).
    inactivity_sweep_s: float = 30.0
    # A relay or shard round whose worker stops heartbeating (died) restarts elsewhere after this.
    webhook_heartbeat_timeout_s: float = 20.0
    # After a secret rotation the previous secret also signs deliveries for this long.
    webhook_secret_grace_s: int = 24 * 3600
    # Flows: the largest encoded action list a flow may have, and the most of an HTTP answer
    # (`fetch`, `webhook_send` with `wait_response`) a run reads; a larger answer fails the action.
    flow_max_bytes: int = 256 * 1024
    flow_http_max_answer_bytes: int = 256 * 1024
    # Browser origins allowed to call the API and the event stream (CORS), comma-separated;
    # empty means CORS is off (browsers on other origins get no access).
    cors_origins: str = ""
    log_level: str = "INFO"
    # `json` (one object per line) or `text`; empty means json, except text under `hub run`.
    log_format: str = ""
    # The worker's Prometheus endpoint (hub and Temporal SDK metrics) on HUB_HTTP_HOST; 0 = off.
    worker_metrics_port: int = 9000
    # AES-GCM keys of the Temporal payload codec, "kid:base64key,..."; the first encrypts, all
    # decrypt (rotation). Empty means payloads are stored unencrypted.
    temporal_codec_key: str = ""
    # Browser origins of the Temporal UI allowed to call /codec (CORS), comma-separated; empty
    # means the `hub run` dev server UI (http://127.0.0.1:PORT and http://localhost:PORT).
    temporal_ui_origins: str = ""
    # Base URL of the Temporal UI the inbox links activeflows to; empty means the `hub run` dev
    # server's UI (http://127.0.0.1:PORT) when HUB_TEMPORAL_ADDRESS is unset, else no links.
    temporal_ui_url: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"HUB_{f.name.upper()}")
            if raw is None:
                continue
            if f.type == "int":
                try:
                    values[f.name] = int(raw)
                except ValueError as exc:
                    raise ValueError(f"HUB_{f.name.upper()} must be an integer, got {raw!r}") from exc
            elif f.type == "float":
                try:
                    values[f.name] = float(raw)
                except ValueError as exc:
                    raise ValueError(f"HUB_{f.name.upper()} must be a number, got {raw!r}") from exc
            elif f.type == "bool":
                values[f.name] = _env_bool(raw)
            else:
                values[f.name] = raw
        return cls(**values)  # type: ignore[arg-type]

    def jwt_secret_problem(self) -> str | None:
        """Why `jwt_secret` must not sign tokens, or None when it is a real secret."""
        if not self.jwt_secret:
            return "HUB_JWT_SECRET is not set: set it to a random string of at least 32 bytes"
        if len(self.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
            return f"HUB_JWT_SECRET is too short: it needs at least {MIN_JWT_SECRET_BYTES} bytes"
        if self.jwt_secret in KNOWN_JWT_SECRETS:
            return "HUB_JWT_SECRET is a published example: set it to a random string of at least 32 bytes"
        return None

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'hub.sqlite'}"

    @property
    def resolved_temporal_address(self) -> str:
        return self.temporal_address or f"127.0.0.1:{self.temporal_port}"

    @property
    def resolved_sms_api_url(self) -> str:
        return (self.sms_api_url or f"http://127.0.0.1:{self.fake_sms_port}").rstrip("/")

    @property
    def resolved_line_api_url(self) -> str:
        return (self.line_api_url or f"http://127.0.0.1:{self.fake_line_port}").rstrip("/")

    @property
    def resolved_line_data_api_url(self) -> str:
        if self.line_data_api_url:
            return self.line_data_api_url.rstrip("/")
        return self.resolved_line_api_url if not self.line_api_url else LINE_DATA_API_URL

    @property
    def resolved_temporal_ui_origins(self) -> tuple[str, ...]:
        if self.temporal_ui_origins:
            return tuple(o.strip().rstrip("/") for o in self.temporal_ui_origins.split(",") if o.strip())
        port = self.temporal_ui_port
        return (f"http://127.0.0.1:{port}", f"http://localhost:{port}")

    @property
    def resolved_temporal_ui_url(self) -> str:
        if self.temporal_ui_url:
            return self.temporal_ui_url.rstrip("/")
        return "" if self.temporal_address else f"http://127.0.0.1:{self.temporal_ui_port}"

    @property
    def resolved_public_url(self) -> str:
        return (self.public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @property
    def resolved_cors_origins(self) -> list[str]:
        return [origin.strip().rstrip("/") for origin in self.cors_origins.split(",") if origin.strip()]

    @property
    def resolved_webhook_retry_schedule(self) -> tuple[float, ...]:
        try:
            delays = tuple(float(part) for part in self.webhook_retry_schedule_s.split(",") if part.strip())
        except ValueError as exc:
            raise ValueError(
                f"HUB_WEBHOOK_RETRY_SCHEDULE_S must be comma-separated seconds, got "
                f"{self.webhook_retry_schedule_s!r}"
            ) from exc
        if any(delay < 0 for delay in delays):
            raise ValueError("HUB_WEBHOOK_RETRY_SCHEDULE_S must not contain negative delays")
        return delays
