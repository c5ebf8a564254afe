"""The inbox's view rules: which links and images it renders, which buttons a caller gets, the
Temporal UI link, the same-origin rule of the session cookie and where login sends you."""

from __future__ import annotations

import uuid
from urllib.parse import unquote

import pytest

from api.deps import Caller
from api.inbox import views
from api.inbox.controller import safe_next
from api.inbox.session import same_origin
from hub.permissions import ADMIN, MANAGER, NIL_UUID


@pytest.mark.parametrize(
    ("url", "linked"),
    [
        ("https://media.example.com/a.jpg", True),
        ("http://media.example.com/a.pdf", True),
        ("/v1.0/media/123", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("//evil.example/x", False),
        ("/\\evil.example", False),
        ("vbscript:x", False),
        ("https:///nohost", False),
    ],
)
def test_only_http_and_own_paths_become_links(url, linked):
    assert (views.safe_url(url) is not None) == linked


def test_images_inline_only_from_https_or_the_hub_itself():
    assert views.media_view({"type": "image/jpeg", "url": "https://x.example/p.jpg"}, 1)["kind"] == "image"
    assert views.media_view({"type": "image", "url": "/v1.0/media/1"}, 1)["kind"] == "image"
    # http images would be blocked by the CSP (and leak the page over plain http): a link.
    assert views.media_view({"type": "image/png", "url": "http://x.example/p.png"}, 1)["kind"] == "link"
    assert views.media_view({"type": "application/pdf", "url": "https://x.example/f.pdf"}, 2) == {
        "kind": "link",
        "url": "https://x.example/f.pdf",
        "type": "application/pdf",
        "name": "f.pdf",
        "alt": "Image 2 (application/pdf)",
    }
    shown = views.media_view({"type": "image/png", "url": "javascript:alert(1)"}, 1)
    assert shown["kind"] == "text"


def test_any_channel_gets_a_label():
    assert [views.channel_label(c) for c in ("sms", "line", "email", "whatsapp", "")] == [
        "SMS",
        "LINE",
        "Email",
        "whatsapp",
        "unknown",
    ]


def caller(permission: int) -> Caller:
    return Caller(agent_id=uuid.uuid4(), customer_id=uuid.uuid4(), permission=permission)


@pytest.mark.parametrize(
    ("who", "owner", "status", "expected"),
    [
        ("admin", "nobody", "open", {"assign_self", "assign_menu", "close", "tag"}),
        ("manager", "other", "open", {"assign_self", "assign_menu", "unassign", "close", "tag"}),
        ("admin", "self", "closed", {"assign_menu", "unassign", "reopen", "tag"}),
        ("agent", "self", "open", {"unassign", "close", "tag"}),
        ("agent", "self", "closed", {"unassign", "reopen", "tag"}),
        ("agent", "other", "open", set()),
        ("agent", "nobody", "open", set()),
    ],
)
def test_buttons_follow_the_apis_rules(who, owner, status, expected):
    me = caller({"admin": ADMIN, "manager": MANAGER, "agent": 0}[who])
    owner_id = {"self": me.agent_id, "other": uuid.uuid4(), "nobody": NIL_UUID}[owner]
    granted = {k for k, v in views.abilities(me, {"owner_id": owner_id, "status": status}).items() if v}
    assert granted == expected


def test_the_temporal_ui_link_queries_the_conversation_id():
    cid = uuid.uuid4()
    link = views.temporal_links("http://ui:8233", "default", cid, "activeflow-x")
    assert link.startswith("http://ui:8233/namespaces/default/workflows?query=")
    assert unquote(link.split("query=")[1]) == f'ConversationId="{cid}" AND WorkflowId="activeflow-x"'
    assert views.temporal_links("", "default", cid) == ""


@pytest.mark.parametrize(
    ("headers", "method", "allowed"),
    [
        ({"sec-fetch-site": "same-origin"}, "POST", True),
        ({"sec-fetch-site": "same-site"}, "POST", False),
        ({"sec-fetch-site": "cross-site"}, "POST", False),
        ({"sec-fetch-site": "none"}, "POST", False),
        ({"sec-fetch-site": "none"}, "GET", True),
        ({"origin": "http://hub:8000", "host": "hub:8000"}, "DELETE", True),
        ({"origin": "http://hub:8001", "host": "hub:8000"}, "PUT", False),
        ({"origin": "null", "host": "hub:8000"}, "POST", False),
        ({"host": "hub:8000"}, "POST", False),
        ({"host": "hub:8000"}, "GET", True),
    ],
)
def test_the_session_cookie_counts_only_from_this_origin(headers, method, allowed):
    assert same_origin(headers, method) is allowed


@pytest.mark.parametrize(
    ("wanted", "goes"),
    [
        ("/inbox/conversations/x", "/inbox/conversations/x"),
        ("https://evil.example/inbox", "/inbox"),
        ("//evil.example/inbox", "/inbox"),
        ("/v1.0/conversations", "/inbox"),
        ("", "/inbox"),
    ],
)
def test_login_returns_only_to_inbox_pages(wanted, goes):
    assert safe_next(wanted) == goes
