"""The bench's webhook receiver, in its own process: every post's Standard Webhooks signature is
verified (the `standardwebhooks` library); `GET /stats` answers the counts. Delivery is at least
once, so posts are also counted by distinct `webhook-id` (`ids`), as a receiver would dedupe them;
`duplicates` lists (up to 100) ids that came more than once.

`python -m tests.bench.receiver PORT SECRET`"""

from __future__ import annotations

import json
import sys

import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError

stats = {"verified": 0, "bad_signature": 0, "ids": 0, "duplicates": []}
seen: set[str] = set()


def make_app(secret: str):
    verifier = Webhook(secret)

    async def app(scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        status, answer = 200, b'{"ok": true}'
        if scope["method"] == "GET" and scope["path"] == "/stats":
            answer = json.dumps(stats).encode()
        else:
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            try:
                verifier.verify(body, headers)
                stats["verified"] += 1
                webhook_id = headers["webhook-id"]
                if webhook_id in seen:
                    if len(stats["duplicates"]) < 100:
                        stats["duplicates"].append(webhook_id)
                else:
                    seen.add(webhook_id)
                stats["ids"] = len(seen)
            except WebhookVerificationError:
                stats["bad_signature"] += 1
                status, answer = 401, b"bad signature"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    return app


if __name__ == "__main__":
    port, secret = int(sys.argv[1]), sys.argv[2]
    uvicorn.run(
        make_app(secret), host="127.0.0.1", port=port, log_level="warning", lifespan="off", access_log=False
    )
