"""Loopback fake providers for tests and the embedded run: real HTTP servers speaking the
Twilio-compatible SMS REST format and the LINE Messaging API, with controls to make them fail."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from litestar import Litestar, Request, Response, get, post
from litestar.params import FromPath, JSONBody
from twilio.request_validator import RequestValidator

from api.supervise import QuietServer

log = logging.getLogger("hub.fakes")


@dataclass
class FakeState:
    """What a fake received, and how it should answer the next requests."""

    received: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0
    fail_status: int = 500
    reject_next: int = 0
    reject_status: int = 400
    delay_s: float = 0.0
    # While held, requests wait (counted in `in_flight`) until the hold is lifted.
    hold: bool = False
    in_flight: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)
    # SMS only: a status callback sent after each accepted message ("" = none).
    auto_status: str = ""
    # SMS only: a status callback sent *before* answering the create request ("" = none), as
    # Twilio may; with `callback_host` the signed callback goes to that base instead of the URL's.
    callback_before_answer: str = ""
    callback_host: str = ""
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)
    # LINE only: group id -> name, served by the group summary endpoint.
    groups: dict[str, str] = field(default_factory=dict)
    _seen: dict[str, dict[str, Any]] = field(default_factory=dict)
    _tasks: set[asyncio.Task] = field(default_factory=set)

    def control(self, values: dict[str, Any]) -> dict[str, Any]:
        keys = ("fail_next", "fail_status", "reject_next", "reject_status", "delay_s", "auto_status")
        for key in (*keys, "callback_before_answer", "callback_host"):
            if key in values:
                setattr(self, key, type(getattr(self, key))(values[key]))
        if "hold" in values:
            self.hold = bool(values["hold"])
            if self.hold:
                self._released.clear()
            else:
                self._released.set()
        return self.snapshot()

    def reset(self) -> None:
        self.received.clear()
        self.callbacks.clear()
        self.profiles.clear()
        self.groups.clear()
        self._seen.clear()
        self.fail_next = self.reject_next = 0
        self.delay_s = 0.0
        self.auto_status = self.callback_before_answer = self.callback_host = ""
        self.control({"hold": False})

    def snapshot(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "callbacks": self.callbacks,
            "fail_next": self.fail_next,
            "reject_next": self.reject_next,
            "auto_status": self.auto_status,
            "hold": self.hold,
            "in_flight": self.in_flight,
        }

    async def injected_failure(self) -> Response | None:
        if self.hold:
            self.in_flight += 1
            try:
                await self._released.wait()
            finally:
                self.in_flight -= 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response({"code": 20500, "message": "fake provider failure"}, status_code=self.fail_status)
        if self.reject_next > 0:
            self.reject_next -= 1
            return Response(
                {"code": 21211, "message": "The 'To' number is not a valid phone number."},
                status_code=self.reject_status,
            )
        return None

    def spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _control_handlers(state: FakeState) -> list:
    @get("/_fake/state", sync_to_thread=False)
    def read_state() -> dict[str, Any]:
        return state.snapshot()

    @post("/_fake/control", status_code=200)
    async def control(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        return state.control(data)

    @post("/_fake/reset", status_code=200, sync_to_thread=False)
    def reset() -> dict[str, Any]:
        state.reset()
        return state.snapshot()

    return [read_state, control, reset]


# --- SMS -----------------------------------------------------------------------------------


async def send_status_callback(url: str, token: str, params: dict[str, str], post_to: str = "") -> int:
    """Signs for `url` (the StatusCallback given) and posts there, or to `post_to` (a proxy's view)."""
    signature = RequestValidator(token).compute_signature(url, params)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(post_to or url, data=params, headers={"X-Twilio-Signature": signature})
    return response.status_code


# twilio-oai api_v2010: `Body` "can be up to 1,600 characters"; too long is error 21617.
SMS_BODY_LIMIT = 1600


def _twilio_error(code: int, message: str) -> Response:
    body = {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return Response({**body, "status": 400}, status_code=400)


def create_sms_app(state: FakeState) -> Litestar:
    @post("/2010-04-01/Accounts/{account_sid:str}/Messages.json")
    async def create_message(request: Request, account_sid: FromPath[str]) -> Response:
        auth = request.headers.get("authorization", "")
        try:
            user, _, token = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        except ValueError:
            user, token = "", ""
        if user != account_sid or not token:
            return Response({"code": 20003, "message": "Authenticate"}, status_code=401)
        key = request.headers.get("idempotency-key", "")
        if key and key in state._seen:
            return Response(state._seen[key], status_code=201)
        if failure := await state.injected_failure():
            return failure
        form = await request.form()
        if len(form.get("Body", "")) > SMS_BODY_LIMIT:
            return _twilio_error(21617, "The concatenated message body exceeds the 1600 character limit.")
        if len(form.getall("MediaUrl") if "MediaUrl" in form else []) > 10:
            return _twilio_error(21623, "Too many media URLs: at most 10 are allowed.")
        record = {
            "sid": "SM" + uuid.uuid4().hex,
            "account_sid": account_sid,
            "to": form.get("To", ""),
            "from": form.get("From", ""),
            "body": form.get("Body", ""),
            "media_url": form.getall("MediaUrl") if "MediaUrl" in form else [],
            "status_callback": form.get("StatusCallback", ""),
            "status": "queued",
        }
        state.received.append(record)
        if key:
            state._seen[key] = record
        if state.callback_before_answer and record["status_callback"]:
            await _callback(state, record, token, state.callback_before_answer)
        if state.auto_status and record["status_callback"]:
            state.spawn(_callback(state, record, token, state.auto_status))
        return Response(record, status_code=201)

    @post("/_fake/callback", status_code=200)
    async def callback(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        """Send a status callback now: {"sid", "status", "token", "error_code"?, "post_to"?}."""
        record = next(r for r in state.received if r["sid"] == data["sid"])
        code = await _callback(
            state, record, data["token"], data["status"], data.get("error_code", ""), data.get("post_to", "")
        )
        return {"status_code": code}

    return Litestar([create_message, callback, *_control_handlers(state)], logging_config=None)


async def _callback(
    state: FakeState, record: dict[str, Any], token: str, status: str, error: str = "", post_to: str = ""
) -> int:
    params = {
        "MessageSid": record["sid"],
        "SmsSid": record["sid"],
        "AccountSid": record["account_sid"],
        "MessageStatus": status,
        "To": record["to"],
        "From": record["from"],
    }
    if error or status in ("failed", "undelivered"):
        params["ErrorCode"] = error or "30003"
    url = record["status_callback"]
    if not post_to and state.callback_host:
        parts = urlsplit(url)
        post_to = state.callback_host.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    code = await send_status_callback(url, token, params, post_to)
    state.callbacks.append({"sid": record["sid"], "status": status, "status_code": code})
    return code


# --- LINE ----------------------------------------------------------------------------------


def line_signature(channel_secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()


# line-openapi messaging-api.yml: PushMessageRequest.messages 1..5; required fields per type.
LINE_REQUIRED = {
    "text": ("text",),
    "image": ("originalContentUrl", "previewImageUrl"),
    "video": ("originalContentUrl", "previewImageUrl"),
    "audio": ("originalContentUrl", "duration"),
    "sticker": ("packageId", "stickerId"),
    "location": ("title", "address", "latitude", "longitude"),
}
LINE_URL_FIELDS = ("originalContentUrl", "previewImageUrl")


def line_push_errors(data: Any) -> list[dict[str, str]]:
    """What LINE's push endpoint would refuse in `data` (its `details` array), [] when valid."""
    if not isinstance(data, dict) or not isinstance(data.get("to"), str) or not data["to"]:
        return [{"message": "Must not be empty", "property": "to"}]
    messages = data.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
        return [{"message": "Size must be between 1 and 5", "property": "messages"}]
    errors = []
    for i, message in enumerate(messages):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind not in LINE_REQUIRED:
            errors.append({"message": "Invalid message type", "property": f"messages[{i}].type"})
            continue
        for name in LINE_REQUIRED[kind]:
            if message.get(name) in (None, ""):
                errors.append({"message": "Must not be empty", "property": f"messages[{i}].{name}"})
        if kind == "text" and len(message.get("text") or "") > 5000:
            errors.append({"message": "Length must be between 0 and 5000", "property": f"messages[{i}].text"})
        for name in LINE_URL_FIELDS:
            url = message.get(name)
            if isinstance(url, str) and url and (not url.startswith("https://") or len(url) > 2000):
                errors.append({"message": "Must be an https URL of at most 2000 characters",
                               "property": f"messages[{i}].{name}"})
    return errors


def create_line_app(state: FakeState) -> Litestar:
    @post("/v2/bot/message/push")
    async def push(request: Request, data: JSONBody[Any]) -> Response:
        if not request.headers.get("authorization", "").startswith("Bearer "):
            return Response({"message": "Authentication failed"}, status_code=401)
        retry_key = request.headers.get("x-line-retry-key", "")
        if retry_key and retry_key in state._seen:
            # A reused retry key: 409 with the accepted request's id and its sentMessages.
            earlier = state._seen[retry_key]
            return Response(
                {"message": "The retry key is already accepted", "sentMessages": earlier["sent"]},
                status_code=409,
                headers={"x-line-accepted-request-id": earlier["request_id"]},
            )
        if failure := await state.injected_failure():
            return failure
        if errors := line_push_errors(data):
            message = f"The request body has {len(errors)} error(s)"
            return Response({"message": message, "details": errors}, status_code=400)
        record = {
            "request_id": str(uuid.uuid4()),
            "retry_key": retry_key,
            "to": data.get("to"),
            "messages": data.get("messages", []),
        }
        record["sent"] = [
            {"id": str(uuid.uuid4().int)[:18], "quoteToken": uuid.uuid4().hex} for _ in record["messages"]
        ]
        state.received.append(record)
        if retry_key:
            state._seen[retry_key] = record
        return Response({"sentMessages": record["sent"]}, headers={"x-line-request-id": record["request_id"]})

    @get("/v2/bot/group/{group_id:str}/summary")
    async def group_summary(group_id: FromPath[str]) -> Response:
        if group_id not in state.groups:
            return Response({"message": "Not found"}, status_code=404)
        return Response({"groupId": group_id, "groupName": state.groups[group_id]})

    @get("/v2/bot/profile/{user_id:str}")
    async def profile(user_id: FromPath[str]) -> Response:
        if user_id not in state.profiles:
            return Response({"message": "Not found"}, status_code=404)
        return Response({"userId": user_id, "displayName": state.profiles[user_id], "language": "en"})

    @get("/v2/bot/message/{message_id:str}/content")
    async def content(message_id: FromPath[str]) -> Response:
        return Response(b"\x89PNG\r\n\x1a\n", media_type="image/png")

    @post("/_fake/profiles", status_code=200)
    async def set_profiles(data: JSONBody[dict[str, str]]) -> dict[str, str]:
        state.profiles.update(data)
        return state.profiles

    @post("/_fake/groups", status_code=200)
    async def set_groups(data: JSONBody[dict[str, str]]) -> dict[str, str]:
        state.groups.update(data)
        return state.groups

    handlers = [push, profile, content, group_summary, set_profiles, set_groups]
    return Litestar([*handlers, *_control_handlers(state)], logging_config=None)


@dataclass
class Fakes:
    sms: FakeState
    line: FakeState
    servers: list[uvicorn.Server]
    tasks: list[asyncio.Task]

    async def stop(self) -> None:
        for server in self.servers:
            server.should_exit = True
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def start_server(
    app: Litestar, host: str, port: int, lifespan: str = "off"
) -> tuple[uvicorn.Server, asyncio.Task]:
    """A uvicorn server for `app` in the running event loop, returned once it accepts connections."""
    # log_config=None: uvicorn's lines go through the process's own handler (JSON or text).
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", lifespan=lifespan, log_config=None
    )
    # Signals are the process's (hub run's supervisor): a server of its own that captured SIGTERM
    # would re-raise it after stopping, and a second SIGTERM means "force exit" to the API.
    server = QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"server on {host}:{port} stopped while starting")
        await asyncio.sleep(0.01)
    return server, task


async def start_fakes(sms_port: int, line_port: int, host: str = "127.0.0.1") -> Fakes:
    sms, line = FakeState(), FakeState()
    sms_server, sms_task = await start_server(create_sms_app(sms), host, sms_port)
    line_server, line_task = await start_server(create_line_app(line), host, line_port)
    return Fakes(sms, line, [sms_server, line_server], [sms_task, line_task])
