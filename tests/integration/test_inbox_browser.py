"""The agent inbox in a real browser: Playwright driving Debian's headless chromium against the hub
(PostgreSQL, Redis, Temporal worker and relay, the fake SMS provider), with the page's own CSP.

Screenshots for the README are taken here; HUB_UPDATE_SCREENSHOTS=1 writes them to docs/."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import struct
import uuid
import zlib
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect
from redis.asyncio import Redis

from hub import db
from hub.tables import Conversation
from tests.helpers import Tenant, make_tenant, serving, signed_sms, sms_params, wait_for
from tests.inbox_helpers import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("dispatchers")]

CHROMIUM = "/usr/bin/chromium"
TEMPORAL_UI = "http://temporal-ui.test:8233"
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
# Live updates travel outbox -> relay workflow -> Redis -> stream -> page: allow a loaded machine.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="module")
async def inbox_url(settings, pg_engine, dispatchers):
    """The hub's API (with the inbox) on its own port, with a Temporal UI to link to."""
    with_ui = dataclasses.replace(settings, temporal_ui_url=TEMPORAL_UI)
    async with serving(with_ui, restore_engine=pg_engine) as url:
        yield url
    db.use_engine(pg_engine)


@pytest.fixture(scope="module")
async def chromium():
    assert await asyncio.to_thread(os.path.exists, CHROMIUM), (
        f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        await browser.close()


@pytest.fixture
async def hub_http(inbox_url, pg):
    async with httpx.AsyncClient(base_url=inbox_url, timeout=30) as http:
        yield http


@pytest.fixture
async def new_page(chromium, inbox_url):
    contexts = []

    async def make() -> Page:
        context = await chromium.new_context(base_url=inbox_url, viewport={"width": 1280, "height": 860})
        contexts.append(context)
        page = await context.new_page()
        # A script the CSP blocked, or any error of the page's own, fails the test.
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda msg: (
                page.errors.append(msg.text)  # type: ignore[attr-defined]
                if msg.type == "error" and "Content Security Policy" in msg.text
                else None
            ),
        )
        return page

    yield make
    for context in contexts:
        await context.close()


async def inbound(http: httpx.AsyncClient, tenant: Tenant, sender: str, text: str, media=None) -> None:
    params = sms_params(sender=sender, to=tenant.account["number"], body=text, media=media)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await http.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def conversation_of(tenant: Tenant, sender: str) -> str:
    async def found():
        return (
            await Conversation.select(Conversation.id)
            .where(Conversation.customer_id == tenant.customer_id, Conversation.peer_target == sender)
            .first()
        )

    return str((await wait_for(found))["id"])


async def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    await page.goto("/inbox")
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Inbox", exact=True)).to_be_visible()
    await expect(page.locator("#live-status")).to_have_text("Live")


def sender() -> str:
    return f"+1415{uuid.uuid4().int % 10**7:07d}"


async def test_login_then_an_inbound_sms_appears_in_unassigned_live(new_page, hub_http):
    tenant = await make_tenant()
    page = await new_page()
    await page.goto("/inbox")
    await page.get_by_label("Username").fill(tenant.admin.username)
    await page.get_by_label("Password").fill("wrong-password")
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("wrong username or password")
    await log_in(page, tenant.admin.username)
    # The JWT lives in an HttpOnly cookie: scripts cannot read it, storage holds nothing.
    assert await page.evaluate("document.cookie") == ""
    assert await page.evaluate("window.localStorage.length + window.sessionStorage.length") == 0
    await page.get_by_role("link", name="Unassigned").click()
    await expect(page).to_have_url(re.compile(r"view=unassigned"))
    await expect(page.locator("#list-empty")).to_be_visible()
    await expect(page.locator("#live-status")).to_have_text("Live")

    number = sender()
    await inbound(hub_http, tenant, number, "Is my parcel on its way?")
    row = page.locator("#conversations > li")
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("Is my parcel on its way?")
    await expect(row).to_contain_text(f"SMS · {number}")
    await expect(row.locator(".chip.channel")).to_have_text("SMS")
    await expect(row).to_contain_text("Unassigned")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_open_reply_the_provider_gets_it_and_the_chip_turns_done_live(new_page, hub_http, fake_sms):
    tenant = await make_tenant()
    number = sender()
    await inbound(hub_http, tenant, number, "Hello, anyone there?")
    page = await new_page()
    await log_in(page, tenant.admin.username)
    await page.get_by_role("link", name="Unassigned").click()
    await page.get_by_role("link", name=f"SMS · {number}").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"SMS · {number}")
    await expect(page.locator("#live-status")).to_have_text("Live")
    await expect(page.locator("#messages .message.incoming")).to_contain_text("Hello, anyone there?")
    # The channel choice defaults to the hub's own selection.
    await expect(page.get_by_label("Send through")).to_have_value("")
    await expect(page.get_by_label("Send through").locator("option").first).to_have_text(
        f"Automatic: SMS · {number}"
    )

    await page.get_by_label("Reply").fill("Yes! How can I help?")
    await page.get_by_role("button", name="Send").click()
    sent = page.locator("#messages .message.outgoing")
    await expect(sent).to_have_count(1)
    await expect(sent).to_contain_text("Yes! How can I help?")
    await expect(sent.locator(".status-chip")).to_have_text("Status: done")
    assert [r["body"] for r in fake_sms.received] == ["Yes! How can I help?"]
    assert fake_sms.received[0]["to"] == number
    await expect(page.get_by_label("Reply")).to_have_value("")

    # An inbound message while the page is open arrives live too.
    await inbound(hub_http, tenant, number, "Where is order 42?")
    await expect(page.locator("#messages .message.incoming")).to_have_count(2)
    # An over-long SMS is refused by the API, which says why next to the reply box.
    await page.get_by_label("Reply").fill("x" * 1601)
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#reply-error")).to_contain_text("no participant can carry this message")
    await expect(page.locator("#reply-error")).to_contain_text("SMS messages carry at most 1,600")
    assert len(fake_sms.received) == 1
    assert page.errors == []  # type: ignore[attr-defined]


async def test_assign_unassign_tag_close_and_the_reply_box_shows_the_409(new_page, hub_http):
    tenant = await make_tenant()
    number = sender()
    await inbound(hub_http, tenant, number, "Please call me back")
    conversation = await conversation_of(tenant, number)
    page = await new_page()
    await log_in(page, tenant.admin.username)
    await page.goto(f"/inbox/conversations/{conversation}")
    await expect(page.locator("#live-status")).to_have_text("Live")
    owner = page.locator("#owner-name")
    await expect(owner).to_have_text("Unassigned")

    await page.get_by_role("button", name="Assign to me").click()
    await expect(owner).to_have_text("admin")
    await expect(page.get_by_role("button", name="Assign to me")).to_have_count(0)
    # Keyboard focus stays in the owner section after its buttons changed.
    assert await page.evaluate("document.activeElement.closest('section') !== null")

    menu = page.get_by_label("Assign to")
    await menu.select_option(label="agent")
    await page.get_by_role("button", name="Assign", exact=True).click()
    await expect(owner).to_have_text("agent")
    row = await Conversation.select().where(Conversation.id == uuid.UUID(conversation)).first()
    assert row["owner_id"] == tenant.agent.id

    await page.get_by_role("button", name="Unassign").click()
    await expect(owner).to_have_text("Unassigned")
    await expect(page.get_by_role("button", name="Unassign")).to_have_count(0)

    await page.get_by_label("Add tag").fill("VIP")
    await page.get_by_role("button", name="Add", exact=True).click()
    await expect(page.locator("#tag-list")).to_contain_text("vip")
    await page.get_by_label("Add tag").fill("not a tag!")
    await page.get_by_role("button", name="Add", exact=True).click()
    await expect(page.locator("#tags-error")).to_contain_text("matching regex")
    await page.get_by_role("button", name="Remove tag vip").click()
    await expect(page.locator("#tag-list")).to_have_count(0)

    await page.get_by_role("button", name="Close").click()
    await expect(page.locator("#conversation-status")).to_have_text("closed")
    await expect(page.get_by_role("button", name="Reopen")).to_be_visible()
    await page.get_by_label("Reply").fill("One more thing")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator("#reply-error")).to_have_text("the conversation is closed; reopen it to send")
    await page.get_by_role("button", name="Reopen").click()
    await expect(page.locator("#conversation-status")).to_have_text("open")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_plain_agent_sees_only_mine_and_no_assign_menu(new_page, hub_http):
    tenant = await make_tenant()
    number = sender()
    await inbound(hub_http, tenant, number, "Hi agent")
    conversation = await conversation_of(tenant, number)
    assigned = await hub_http.put(
        f"/v1.0/conversations/{conversation}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assigned.status_code == 200
    page = await new_page()
    await log_in(page, tenant.agent.username)
    tabs = page.get_by_role("navigation", name="Conversation lists").get_by_role("link")
    await expect(tabs).to_have_text(["Mine"])
    row = page.locator(f"#row-{conversation}")
    await expect(row).to_contain_text("Hi agent")
    await row.get_by_role("link").click()
    await expect(page.get_by_role("button", name="Unassign")).to_be_visible()
    await expect(page.get_by_role("button", name="Close")).to_be_visible()
    await expect(page.get_by_role("button", name="Assign to me")).to_have_count(0)
    await expect(page.get_by_label("Assign to")).to_have_count(0)

    # Taken away by an admin: the agent's stream says so, and the list drops it live.
    await page.go_back()
    await expect(page.locator("#live-status")).to_have_text("Live")
    await expect(row).to_be_visible()
    taken = await hub_http.post(f"/v1.0/conversations/{conversation}/unassign", headers=tenant.admin.headers)
    assert taken.status_code == 200
    await expect(row).to_have_count(0)
    await expect(page.locator("#list-empty")).to_be_visible()

    # A button shown before a change the page has not heard of yet: the API refuses, and its
    # 403 appears next to the button.
    given = await hub_http.put(
        f"/v1.0/conversations/{conversation}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert given.status_code == 200
    await page.goto(f"/inbox/conversations/{conversation}")
    await expect(page.locator("#live-status")).to_have_text("Live")
    await page.route("**/panels", lambda route: route.abort())
    taken = await hub_http.post(f"/v1.0/conversations/{conversation}/unassign", headers=tenant.admin.headers)
    assert taken.status_code == 200
    await page.get_by_role("button", name="Close").click()
    await expect(page.locator("#status-error")).to_have_text(
        "only the owning agent or an admin or manager may close this conversation"
    )
    row = (
        await Conversation.select(Conversation.status)
        .where(Conversation.id == uuid.UUID(conversation))
        .first()
    )
    assert row["status"] == "open"


async def test_message_html_renders_as_text(new_page, hub_http):
    tenant = await make_tenant()
    number = sender()
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script><b>bold</b>'
    await inbound(hub_http, tenant, number, hostile)
    conversation = await conversation_of(tenant, number)
    page = await new_page()
    await log_in(page, tenant.admin.username)
    await page.goto(f"/inbox/conversations/{conversation}")
    text = page.locator("#messages .message .text")
    await expect(text).to_have_text(hostile)
    assert await text.locator("img, script, b").count() == 0
    await page.goto("/inbox?view=all")
    await expect(page.locator(f"#row-{conversation} .preview")).to_have_text(hostile)
    # The same text arriving live goes through the same escaping.
    await page.goto(f"/inbox/conversations/{conversation}")
    await expect(page.locator("#live-status")).to_have_text("Live")
    await inbound(hub_http, tenant, number, hostile.replace("bold", "live"))
    await expect(page.locator("#messages .message .text")).to_have_count(2)
    assert await page.locator("#messages img, #messages script, #messages b").count() == 0
    assert await page.evaluate("window.pwned === undefined")
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_lost_stream_shows_reconnecting_and_resumes_with_last_event_id(new_page, hub_http, settings):
    tenant = await make_tenant()
    number = sender()
    await inbound(hub_http, tenant, number, "first")
    conversation = await conversation_of(tenant, number)
    page = await new_page()
    await log_in(page, tenant.admin.username)
    await page.goto(f"/inbox/conversations/{conversation}")
    status = page.locator("#live-status")
    await expect(status).to_have_text("Live")
    resumed: list[str | None] = []
    page.on(
        "request",
        lambda r: resumed.append(r.headers.get("last-event-id")) if r.url.endswith("/v1.0/events") else None,
    )
    # The network goes away, and with it the stream: this process's API loses its Redis
    # subscription, which ends every stream (as a dropped connection would).
    await page.context.set_offline(True)
    redis = Redis.from_url(settings.redis_url)
    try:
        for connection in await redis.client_list(_type="pubsub"):
            if connection["name"] == f"hub-api-{os.getpid()}":
                await redis.client_kill_filter(_id=connection["id"])
    finally:
        await redis.aclose()
    await expect(status).to_have_text("Reconnecting…")
    # What happens while the page is offline comes from the outbox once it is back.
    await inbound(hub_http, tenant, number, "sent while you were away")
    await page.context.set_offline(False)
    await expect(status).to_have_text("Live")
    await expect(page.locator("#messages .message.incoming")).to_have_count(2)
    await expect(page.locator("#messages")).to_contain_text("sent while you were away")
    assert resumed and all(value and value.isdigit() for value in resumed), resumed


async def test_inbox_and_conversation_pages_pass_axe_and_are_screenshotted(new_page, hub_http, tmp_path):
    tenant = await make_tenant()
    flow = await hub_http.post(
        "/v1.0/flows",
        json={
            "name": "Auto-reply",
            "detail": "answers first",
            "actions": [
                {
                    "id": "hello",
                    "type": "conversation_send",
                    "option": {"text": "Thanks! An agent will be with you shortly."},
                }
            ],
        },
        headers=tenant.admin.headers,
    )
    assert flow.status_code == 200, flow.text
    account = await hub_http.put(
        f"/v1.0/accounts/{tenant.account['id']}",
        json={"message_flow_id": flow.json()["id"]},
        headers=tenant.admin.headers,
    )
    assert account.status_code == 200, account.text
    alice = "+14155550100"
    contact = await hub_http.post(
        "/v1.0/contacts",
        json={"name": "Alice Martin", "addresses": [{"type": "tel", "target": alice}]},
        headers=tenant.admin.headers,
    )
    assert contact.status_code == 200, contact.text
    await inbound(hub_http, tenant, "+14155550177", "Can I change my delivery address?")
    await inbound(hub_http, tenant, "+14155550188", "Do you ship to Canada?")
    await inbound(
        hub_http,
        tenant,
        alice,
        "Hi, my order #1042 arrived damaged :(",
        media=[("image/jpeg", "https://media.example.com/photo-1042.jpg")],
    )
    conversation = await conversation_of(tenant, alice)

    # The flow answered; then an agent takes over.
    async def flow_ended():
        runs = await hub_http.get(
            "/v1.0/activeflows", params={"conversation_id": conversation}, headers=tenant.admin.headers
        )
        return [r for r in runs.json()["result"] if r["status"] == "ended"]

    await wait_for(flow_ended)
    for body in ({"owner_id": str(tenant.admin.id)},):
        assert (
            await hub_http.put(f"/v1.0/conversations/{conversation}", json=body, headers=tenant.admin.headers)
        ).status_code == 200
    tags = await hub_http.post(
        f"/v1.0/conversations/{conversation}/tags",
        json={"tags": ["damaged", "priority"]},
        headers=tenant.admin.headers,
    )
    assert tags.status_code == 200
    reply = await hub_http.post(
        f"/v1.0/conversations/{conversation}/messages",
        json={"text": "Sorry to hear that, Alice! A replacement ships today."},
        headers=tenant.admin.headers,
    )
    assert reply.status_code == 200
    axe = await asyncio.to_thread(AXE.read_text)
    shots = ROOT / "docs" if os.environ.get("HUB_UPDATE_SCREENSHOTS") == "1" else tmp_path

    page = await new_page()
    # The photo's host is out of reach here: the browser gets a picture from the test instead.
    await page.route(
        "https://media.example.com/**", lambda route: route.fulfill(content_type="image/png", body=picture())
    )
    await log_in(page, tenant.admin.username)
    await page.goto("/inbox?view=all")
    await expect(page.locator("#conversations > li")).to_have_count(3)
    await assert_accessible(page, axe, "inbox")
    await page.screenshot(path=str(shots / "inbox.png"), full_page=True)

    await page.goto(f"/inbox/conversations/{conversation}")
    await expect(page.locator("#messages .status-chip").last).to_have_text("Status: done")
    link = page.get_by_role("link", name="Open in Temporal UI")
    await expect(link).to_have_count(1)
    href = await link.get_attribute("href")
    assert href.startswith(f"{TEMPORAL_UI}/namespaces/default/workflows?query=")
    assert f"ConversationId%3D%22{conversation}%22" in href
    image = page.locator(".medias img")
    await expect(image).to_have_attribute("alt", "Image 1 (image/jpeg)")
    assert await image.evaluate("img => img.complete && img.naturalWidth") == 240
    await assert_accessible(page, axe, "conversation")
    await page.screenshot(path=str(shots / "conversation.png"), full_page=True)
    # Keyboard: the reply box and its button are reachable and show their focus.
    await page.get_by_label("Reply").focus()
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    focused = await page.evaluate("document.activeElement.id")
    assert focused == "reply-send", focused
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"


def picture(width: int = 240, height: int = 160) -> bytes:
    """A small PNG (a parcel-brown gradient), made without an imaging library."""
    rows = b"".join(
        b"\x00" + bytes(c for x in range(width) for c in (150 + x * 80 // width, 110 + y * 60 // height, 70))
        for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


async def assert_accessible(page: Page, axe_source: str, name: str) -> None:
    """axe-core (vendored, injected through DevTools so the page's CSP stays on): no serious or
    critical violation."""
    await page.evaluate(axe_source)
    result = await page.evaluate(
        "async () => JSON.stringify((await axe.run(document, {resultTypes: ['violations']})).violations)"
    )
    violations = json.loads(result)
    bad = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in violations
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == [], f"{name}: {bad}"
