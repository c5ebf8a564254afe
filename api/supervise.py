"""How `hub run` starts and ends its parts: free ports first, a Temporal child that dies with us,
and SIGINT and SIGTERM ending everything the same orderly way."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
from collections.abc import Callable, Iterator

import uvicorn
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from hub.settings import Settings

PR_SET_PDEATHSIG = 1


class PortTaken(Exception):
    """A port `hub run` needs is in use; the message is the one line shown to the user."""


def ports_needed(settings: Settings) -> list[tuple[str, str, int]]:
    """(setting, host, port) of every listener `hub run` is about to open."""
    needed = [("HUB_HTTP_PORT", settings.http_host, settings.http_port)]
    if not settings.temporal_address:
        needed.append(("HUB_TEMPORAL_PORT", "127.0.0.1", settings.temporal_port))
        needed.append(("HUB_TEMPORAL_UI_PORT", "127.0.0.1", settings.temporal_ui_port))
    if not settings.sms_api_url or not settings.line_api_url:
        needed.append(("HUB_FAKE_SMS_PORT", "127.0.0.1", settings.fake_sms_port))
        needed.append(("HUB_FAKE_LINE_PORT", "127.0.0.1", settings.fake_line_port))
    if settings.fake_smtp_port:
        needed.append(("HUB_FAKE_SMTP_PORT", "127.0.0.1", settings.fake_smtp_port))
    return needed


def check_ports(settings: Settings) -> None:
    """Raises PortTaken naming the first port (and its setting) that cannot be listened on; a
    stale `hub run` or Temporal dev server holding one would otherwise be talked to instead."""
    for setting, host, port in ports_needed(settings):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # As the servers do: a port whose last connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortTaken(f"port {port} ({setting}) is already in use on {host}") from None
                raise PortTaken(f"cannot listen on {host}:{port} ({setting}): {exc.strerror}") from None


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel send the child SIGTERM when `hub run` dies, however it
    dies (SIGKILL included). Linux only; elsewhere None (the child is still stopped on exit)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above took effect
            os._exit(1)

    return preexec


async def temporal_ready(client: Client) -> None:
    """Returns once the server serves the namespace and its history shards (an unknown workflow is
    "not found", not "shard status unknown"); raises while it does not yet."""
    await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
    try:
        await client.get_workflow_handle("hub-readiness-probe").describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to `Shutdown`: uvicorn's own handling re-raises a
    SIGTERM after its graceful stop, which kills the process before anything else is stopped."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


_stop_requested = False


def stop_on_sigterm() -> None:
    """From now on SIGTERM ends `hub run` as Ctrl-C does (asyncio.run turns SIGINT into the
    cancellation of its task, which closes what is open), and is remembered, so a start whose
    cancellation a client library swallowed still stops."""

    def on_sigterm(_signum, _frame) -> None:
        global _stop_requested
        _stop_requested = True
        os.kill(os.getpid(), signal.SIGINT)

    signal.signal(signal.SIGTERM, on_sigterm)


class Shutdown:
    """SIGINT and SIGTERM end `hub run` alike: while the API serves, it stops gracefully and the
    worker, fakes and Temporal after it; before that, the start is cancelled. A second signal
    while the API stops makes it stop at once."""

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self.requested = _stop_requested
        self._task: asyncio.Task | None = None

    @property
    def server(self) -> uvicorn.Server | None:
        return self._server

    @server.setter
    def server(self, server: uvicorn.Server) -> None:
        # A client library may swallow the cancellation of the start: the API then never serves.
        server.should_exit = self.requested
        self._server = server

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        if self.requested or _stop_requested:
            raise asyncio.CancelledError  # asked to stop while the database was being prepared

    def uninstall(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    def _on_signal(self) -> None:
        global _stop_requested
        _stop_requested = True
        if self._server is not None:
            if self.requested:
                self._server.force_exit = True
            self._server.should_exit = True
        elif self._task is not None and not self.requested:
            self._task.cancel()
        self.requested = True
