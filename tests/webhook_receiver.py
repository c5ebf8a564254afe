"""A customer's webhook endpoint for tests: a real HTTP server that checks every Standard Webhooks
signature with the `standardwebhooks` library itself, and can be told to fail or be slow."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError

from tests.helpers import free_port


@dataclass
class Received:
    webhook_id: str
    method: str
    body: dict
    # Which of the receiver's secrets verified the signature.
    verified_by: set[str]


@dataclass
class Receiver:
    port: int = field(default_factory=free_port)
    secrets: list[str] = field(default_factory=list)
    # Every request's webhook-id, in arrival order, whatever the answer.
    requests: list[str] = field(default_factory=list)
    # Requests answered 2xx, in arrival order.
    received: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    # webhook-ids answered 500; delays (seconds) taken by the next requests, one each.
    fail_ids: set[str] = field(default_factory=set)
    delays: list[float] = field(default_factory=list)
    # Every request takes at least this long (posts stay in flight for a while).
    slow_s: float = 0.0
    # Non-zero: every signed request is answered with this status and these headers instead.
    answer_status: int = 0
    answer_headers: dict[str, str] = field(default_factory=dict)
    # When each request arrived (loop time), and its headers, beside `requests`.
    request_times: list[float] = field(default_factory=list)
    request_headers: list[dict[str, str]] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/hub"

    def ids(self) -> list[str]:
        return [r.webhook_id for r in self.received]

    async def start(self) -> Receiver:
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def _app(self, scope, receive, send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        webhook_id = headers.get("webhook-id", "")
        self.requests.append(webhook_id)
        self.request_times.append(asyncio.get_running_loop().time())
        self.request_headers.append(headers)
        verified_by = set()
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified_by.add(secret)
            except WebhookVerificationError:
                pass
        if not verified_by:
            self.bad_signatures += 1
            await self._answer(send, 401)
            return
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        if self.slow_s:
            await asyncio.sleep(self.slow_s)
        if self.answer_status:
            await self._answer(send, self.answer_status, b"not now", self.answer_headers)
            return
        if webhook_id in self.fail_ids:
            await self._answer(send, 500, b"receiver says no")
            return
        self.received.append(Received(webhook_id, scope["method"], json.loads(body), verified_by))
        await self._answer(send, 200, b'{"ok": true}')

    @staticmethod
    async def _answer(send, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})
