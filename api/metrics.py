"""Exposing the metrics: GET /metrics on the API, the worker's own port, request timing and logs,
and the Temporal SDK runtime whose Prometheus output is served beside the hub's.

The SDK's Rust core serves its metrics on a loopback port of its own; the hub's endpoints append
that text to theirs, so one scrape gets both. With several API processes (HUB_HTTP_WORKERS > 1),
`hub serve` puts prometheus-client in multiprocess mode and /metrics adds up every process."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import urllib.request

from aiohttp import web
from litestar import Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from temporalio.runtime import LogForwardingConfig, LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig

from api import logs
from hub.metrics import HTTP_REQUEST_DURATION
from hub.settings import Settings

log = logging.getLogger("hub.http")

# Where this process's Temporal runtime serves its metrics (set by install_temporal_runtime).
_temporal_metrics_url: str | None = None


def _loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def install_temporal_runtime(with_metrics: bool) -> None:
    """The process's default Temporal runtime, before any client exists: core logs go through
    Python logging (so they are JSON lines too), and with `with_metrics` its Prometheus output
    is served on a loopback port for the hub's endpoints to include."""
    global _temporal_metrics_url
    metrics = None
    if with_metrics:
        address = f"127.0.0.1:{_loopback_port()}"
        metrics = PrometheusConfig(bind_address=address, counters_total_suffix=True)
        _temporal_metrics_url = f"http://{address}/metrics"
    telemetry = TelemetryConfig(
        logging=LoggingConfig(
            filter=LoggingConfig.default.filter,
            forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
        ),
        metrics=metrics,
    )
    Runtime.set_default(Runtime(telemetry=telemetry), error_if_already_set=False)


def _temporal_text() -> bytes:
    if _temporal_metrics_url is None:
        return b""
    try:
        with urllib.request.urlopen(_temporal_metrics_url, timeout=2) as answer:  # noqa: S310 - loopback
            return answer.read()
    except OSError as exc:
        log.warning("Temporal SDK metrics not readable: %s", exc)
        return b""


def exposition() -> bytes:
    """This process's metrics (every API process's in multiprocess mode), then the SDK's."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return generate_latest(registry) + _temporal_text()


@get("/metrics", include_in_schema=False)
async def metrics_endpoint() -> Response:
    body = await asyncio.to_thread(exposition)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def prepare_multiprocess(settings: Settings) -> None:
    """Before `hub serve` starts several API processes: one directory where they all write."""
    if settings.http_workers <= 1 or "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    import atexit
    import shutil
    import tempfile

    # Fresh per start: counters begin at zero like a single process's, and files do not pile up.
    directory = tempfile.mkdtemp(prefix="hub-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)


def request_metrics_middleware(app: ASGIApp) -> ASGIApp:
    """Times each routed request (labelled by route template, never the raw path), logs one line
    with its outcome, and scopes the request's log lines to its request id."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = scope.get("state", {}).get("request_id")
        logs.new_scope(request_id=request_id)
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", [])
                if request_id and not any(name.lower() == b"x-request-id" for name, _ in headers):
                    # Every answer names its request id, so a caller can quote it (errors do too).
                    message["headers"] = [*headers, (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            method = scope.get("method", "")
            HTTP_REQUEST_DURATION.labels(method=method, route=route, status=str(status)).observe(elapsed)
            log.info(
                "%s %s %s",
                method,
                route,
                status,
                extra={
                    "method": method,
                    "route": route,
                    "status": status,
                    "outcome": "ok" if status < 400 else "client_error" if status < 500 else "error",
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )

    return middleware


async def start_worker_metrics(settings: Settings) -> web.AppRunner | None:
    """The worker's /metrics on HUB_HTTP_HOST:HUB_WORKER_METRICS_PORT (0 = none)."""
    if not settings.worker_metrics_port:
        return None

    async def handle(_request: web.Request) -> web.Response:
        body = await asyncio.to_thread(exposition)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.http_host, settings.worker_metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(
            f"error: cannot listen on {settings.http_host}:{settings.worker_metrics_port} "
            f"(HUB_WORKER_METRICS_PORT): {exc.strerror or exc}"
        ) from None
    logging.getLogger("hub.worker").info(
        "worker metrics on http://%s:%s/metrics", settings.http_host, settings.worker_metrics_port
    )
    return runner
