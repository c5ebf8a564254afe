"""`hub simulate`: a signed inbound SMS, LINE event or email (Mailgun inbound-route format),
posted to a running hub like a provider would."""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from api.fakes import line_signature
from hub import accounts
from hub.channels import email
from hub.settings import Settings


def _account_id(settings: Settings, args: argparse.Namespace) -> uuid.UUID:
    if args.account:
        return uuid.UUID(args.account)
    login_file = Path(settings.data_dir) / "demo-login.json"
    if not login_file.exists():
        raise ValueError("no --account given and no demo account (start `hub run` once)")
    return uuid.UUID(json.loads(login_file.read_text())[f"{args.channel}_account_id"])


def sms_request(account: dict[str, Any], public_url: str, sender: str, text: str) -> tuple[str, dict, dict]:
    url = f"{public_url}/v1.0/hooks/accounts/{account['id']}"
    params = {
        "MessageSid": "SM" + uuid.uuid4().hex,
        "AccountSid": account["sid"],
        "From": sender,
        "To": account["number"],
        "Body": text,
        "NumMedia": "0",
    }
    signature = RequestValidator(account["token"]).compute_signature(url, params)
    return url, params, {"X-Twilio-Signature": signature}


def line_request(
    account: dict[str, Any], public_url: str, user_id: str, text: str, follow: bool
) -> tuple[str, bytes, dict]:
    event: dict[str, Any] = {
        "type": "follow" if follow else "message",
        "webhookEventId": uuid.uuid4().hex.upper()[:26],
        "timestamp": int(time.time() * 1000),
        "mode": "active",
        "source": {"type": "user", "userId": user_id},
        "deliveryContext": {"isRedelivery": False},
    }
    if not follow:
        event["message"] = {"id": str(uuid.uuid4().int)[:18], "type": "text", "text": text}
    body = json.dumps({"destination": "U" + "0" * 32, "events": [event]}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Line-Signature": line_signature(account["secret"], body),
    }
    return f"{public_url}/v1.0/hooks/accounts/{account['id']}", body, headers


def email_fields(
    account: dict[str, Any],
    sender: str,
    text: str,
    subject: str = "Hello",
    name: str = "",
    in_reply_to: str = "",
    message_id: str = "",
    timestamp: int | None = None,
) -> dict[str, str]:
    """The form fields Mailgun posts for one inbound email, signed with the account's key."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    token = secrets.token_hex(25)
    fields = {
        "sender": sender,
        "from": f"{name} <{sender}>" if name else sender,
        "recipient": account["address"],
        "subject": subject,
        "body-plain": text,
        "stripped-text": text,
        "Message-Id": message_id or f"<{uuid.uuid4()}@simulator.localhost>",
        "timestamp": stamp,
        "token": token,
        "signature": email.signature(account["secret"], stamp, token),
    }
    if in_reply_to:
        fields["In-Reply-To"] = fields["References"] = in_reply_to
    return fields


async def simulate(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    account = await accounts.get_account_for_hook(_account_id(settings, args))
    if account is None or account["type"] != args.channel:
        raise ValueError(f"no live {args.channel} account with that id")
    public_url = settings.resolved_public_url
    # The signature covers the public URL; --url only changes where the request is sent.
    target = (args.url.rstrip("/") if args.url else public_url) + f"/v1.0/hooks/accounts/{account['id']}"
    async with httpx.AsyncClient(timeout=10) as http:
        if args.channel == "sms":
            url, params, headers = sms_request(account, public_url, args.sender or "+14155551234", args.text)
            response = await http.post(target, data=params, headers=headers)
        elif args.channel == "email":
            fields = email_fields(
                account,
                args.sender or "alice@example.com",
                args.text,
                args.subject,
                args.name,
                args.in_reply_to,
            )
            files = []
            for i, path in enumerate(args.attach, start=1):
                kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
                content = await asyncio.to_thread(Path(path).read_bytes)
                files.append((f"attachment-{i}", (Path(path).name, content, kind)))
            fields["attachment-count"] = str(len(files))
            url = target
            response = await http.post(target, data=fields, files=files or None)
        else:
            user_id = args.sender or "U" + uuid.uuid4().hex
            if args.name:
                await http.post(f"{settings.resolved_line_api_url}/_fake/profiles", json={user_id: args.name})
            url, body, headers = line_request(account, public_url, user_id, args.text, args.follow)
            response = await http.post(target, content=body, headers=headers)
    return {"status_code": response.status_code, "url": target, "signed_for": url}
