"""The Temporal codec server: POST /codec/decode and /codec/encode for admins, so the Temporal UI
and CLI show the payloads that HUB_TEMPORAL_CODEC_KEY encrypts.

The protocol only looks at the last path segment, so the endpoint may be mounted deeper: the
browser-side UI cannot send our JWT as a header, so `/codec/<jwt>` is an endpoint URL carrying it
(what `hub run` gives its dev server UI; an admin can enter one in the UI's codec settings)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from google.protobuf import json_format
from litestar import Controller, Request, Response, post, route
from litestar.params import FromPath, HeaderParameter, QueryParameter
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from api.codec import CodecError, EncryptionCodec
from api.deps import provide_caller
from api.schemas import PayloadsJSON
from hub.errors import BadRequest, Forbidden, Unavailable
from hub.permissions import ADMIN

CORS_HEADERS = "authorization,content-type,x-namespace"


def cors_middleware(app: ASGIApp) -> ASGIApp:
    """CORS for the Temporal UI's origins (HUB_TEMPORAL_UI_ORIGINS), on answers and errors alike."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        origin = dict(scope["headers"]).get(b"origin", b"").decode("latin-1")
        allowed = origin in scope["app"].state.settings.resolved_temporal_ui_origins

        async def send_wrapper(message: Message) -> None:
            if allowed and message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", origin.encode("latin-1")),
                    (b"access-control-allow-methods", b"POST, OPTIONS"),
                    (b"access-control-allow-headers", CORS_HEADERS.encode()),
                    (b"access-control-allow-credentials", b"true"),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await app(scope, receive, send_wrapper)

    return middleware


async def _convert(
    request: Request, token: str | None, authorization: str | None, direction: str
) -> Response:
    caller = await provide_caller(request, authorization, token)
    if not caller.permission & ADMIN:
        raise Forbidden("the codec endpoint is for admins")
    codec = request.app.state.temporal.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec):
        raise Unavailable("payload encryption is off (HUB_TEMPORAL_CODEC_KEY is unset)")
    body = await request.body()
    try:
        # protobuf's own parser lets `[]` and non-base64 bytes through: the protocol's shape first.
        msgspec.json.decode(body, type=PayloadsJSON, strict=True)
        payloads = json_format.Parse(body, Payloads())
    except (msgspec.ValidationError, msgspec.DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise BadRequest(f'body must be Temporal Payloads as JSON ({{"payloads": [...]}}): {exc}') from exc
    try:
        convert = codec.encode if direction == "encode" else codec.decode
        result = Payloads(payloads=await convert(payloads.payloads))
    except CodecError as exc:
        raise BadRequest(str(exc)) from exc
    return Response(json_format.MessageToJson(result), media_type="application/json")


Authorization = Annotated[str | None, HeaderParameter(name="Authorization", required=False)]
Token = Annotated[str | None, QueryParameter(name="token", required=False)]


class CodecController(Controller):
    path = "/codec"
    tags = ["operations"]
    middleware = [cors_middleware]

    @post("/decode", status_code=200, summary="Decrypt Temporal payloads (admins; codec server protocol)")
    async def decode(
        self, request: Request, authorization: Authorization = None, token: Token = None
    ) -> Response:
        return await _convert(request, token, authorization, "decode")

    @post("/encode", status_code=200, summary="Encrypt Temporal payloads (admins; codec server protocol)")
    async def encode(
        self, request: Request, authorization: Authorization = None, token: Token = None
    ) -> Response:
        return await _convert(request, token, authorization, "encode")

    @post("/{token:str}/decode", status_code=200, include_in_schema=False)
    async def decode_with_token(self, request: Request, token: FromPath[str]) -> Response:
        return await _convert(request, token, None, "decode")

    @post("/{token:str}/encode", status_code=200, include_in_schema=False)
    async def encode_with_token(self, request: Request, token: FromPath[str]) -> Response:
        return await _convert(request, token, None, "encode")

    @route(
        ["/decode", "/encode", "/{token:str}/decode", "/{token:str}/encode"],
        http_method="OPTIONS",
        include_in_schema=False,
        status_code=204,
    )
    async def preflight(self) -> None:
        return None
