"""A local SMTP relay (aiosmtpd) for `hub run` and the tests: it accepts what a relay would and
answers as one does: 552 for a message over its size limit (aiosmtpd), 553 for a recipient that
is no address, 452 past 100 recipients, 500 for a line over 998 characters; on request it fails
the next messages with a 4xx (try again later) or 5xx (refused) of the caller's choice.

Received messages are kept (raw bytes, envelope) and, with `keep_dir`, written there as .eml."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger("hub.smtp_sink")

MAX_MESSAGE_BYTES = 30 * 1024 * 1024
MAX_RECIPIENTS = 100
_ADDRESS = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes


@dataclass
class SmtpSink:
    host: str = "127.0.0.1"
    port: int = 0
    keep_dir: str = ""
    data_size_limit: int = MAX_MESSAGE_BYTES
    received: list[Received] = field(default_factory=list)
    # The next N messages get this answer at DATA (a 4xx: retry later; a 5xx: refused).
    fail_next: int = 0
    fail_answer: str = "451 4.3.0 Try again later"
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> SmtpSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self, data_size_limit=self.data_size_limit, hostname="hub-smtp-sink"),
            self.host,
            self.port,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stops listening and drops open sessions (a relay that went away)."""
        if self._server is not None:
            self._server.close()
            if hasattr(self._server, "close_clients"):
                self._server.close_clients()
            await self._server.wait_closed()
            self._server = None

    def reset(self) -> None:
        self.received.clear()
        self.fail_next = 0
        self.fail_answer = "451 4.3.0 Try again later"

    def _keep(self, number: int, data: bytes) -> None:
        folder = Path(self.keep_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number:06d}.eml").write_bytes(data)

    # aiosmtpd handler hooks

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if not _ADDRESS.match(address):
            return "553 5.1.3 Bad recipient address syntax"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_answer
        data = bytes(envelope.original_content or envelope.content or b"")
        item = Received(str(envelope.mail_from), list(envelope.rcpt_tos), data)
        self.received.append(item)
        if self.keep_dir:
            await asyncio.to_thread(self._keep, len(self.received), data)
        log.info("sink accepted mail from %s to %s (%d bytes)", item.sender, item.recipients, len(data))
        return "250 2.0.0 OK: queued"
