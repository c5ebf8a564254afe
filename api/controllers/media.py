"""GET /v1.0/media/{id}: files the hub stores itself (email attachments), for agents of their
customer only (another customer's media is 404, like a missing one)."""

from uuid import UUID

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.params import FromPath

from api.deps import Caller
from hub import mail

# Shown in a browser as they are; anything else (HTML, SVG, scripts...) downloads as a file.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf"})


def _disposition(content_type: str, filename: str) -> str:
    kind = "inline" if content_type in INLINE_TYPES else "attachment"
    safe = "".join(ch for ch in filename if ch.isprintable() and ch not in '"\\;')[:150]
    return f'{kind}; filename="{safe}"' if safe else kind


class MediaController(Controller):
    path = "/v1.0/media"
    tags = ["media"]

    @get(
        "/{media_id:str}",
        summary="A stored media (an email attachment): its bytes with their content type",
        responses={200: ResponseSpec(bytes, description="The file", media_type="application/octet-stream")},
    )
    async def get_media(self, caller: NamedDependency[Caller], media_id: FromPath[UUID]) -> Response[bytes]:
        row = await mail.get_media(caller.customer_id, media_id)
        return Response(
            bytes(row["data"]),
            media_type=row["content_type"],
            headers={
                "Content-Disposition": _disposition(row["content_type"], row["filename"]),
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "private, max-age=3600",
            },
        )
