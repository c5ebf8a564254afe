"""The inbox's server side: login and the session cookie, CSRF and the same-origin rule scoped to
cookie-authenticated requests (bearer clients and provider hooks unaffected), security headers,
escaping, the API's permissions on every page and fragment, and a list page's statement count."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from piccolo.engine.postgres import PostgresEngine

from api import logs
from hub.tables import Conversation
from tests.helpers import make_tenant, open_conversation, signed_sms, sms_params
from tests.inbox_helpers import PASSWORD, InboxSession, csrf_of


@pytest.fixture
def base_url(client) -> str:
    return str(client.base_url).rstrip("/")


async def inbound(client, tenant, sender: str, text: str) -> None:
    params = sms_params(sender=sender, to=tenant.account["number"], body=text)
    path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
    response = await client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text


async def test_login_sets_an_httponly_samesite_strict_cookie_and_shows_the_inbox(client, base_url):
    tenant = await make_tenant()
    async with InboxSession(base_url) as session:
        form = await session.http.get("/inbox")
        assert form.status_code == 200
        assert form.headers["content-type"].startswith("text/html")
        for text in (
            '<label for="username">Username</label>',
            '<label for="password">Password</label>',
            '<button type="submit">Log in</button>',
        ):
            assert text in form.text
        csp = form.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "frame-ancestors 'none'" in csp
        assert form.headers["x-content-type-options"] == "nosniff"

        wrong = await session.login(tenant.agent, password="not-the-password")
        assert wrong.status_code == 401
        assert "hub_session" not in wrong.headers.get("set-cookie", "")
        assert 'role="alert"' in wrong.text

        response = await session.login(tenant.agent)
        assert response.status_code == 303 and response.headers["location"] == "/inbox"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("hub_session=")
        attributes = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/"} <= attributes
        token = session.http.cookies["hub_session"]
        inbox = await session.http.get("/inbox")
        assert inbox.status_code == 200
        assert "Signed in as <strong>agent</strong>" in inbox.text
        # The JWT is nowhere in the page (never in a URL, never for scripts).
        assert token not in inbox.text

        out = await session.http.post(
            "/inbox/logout", data={"_csrf_token": session.csrf}, headers=session.page_headers
        )
        assert out.status_code == 303
        assert "hub_session" not in session.http.cookies
        again = await session.http.get("/inbox")
        assert '<label for="username">Username</label>' in again.text


async def test_login_posts_need_the_csrf_token_and_the_same_origin(client, base_url):
    tenant = await make_tenant()
    async with InboxSession(base_url) as session:
        csrf = csrf_of((await session.http.get("/inbox")).text)
        form = {"username": tenant.agent.username, "password": PASSWORD}
        no_token = await session.http.post("/inbox/login", data=form, headers=session.page_headers)
        assert no_token.status_code == 403
        cross = await session.http.post(
            "/inbox/login",
            data={**form, "_csrf_token": csrf},
            headers={"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        assert "hub_session" not in session.http.cookies


async def test_the_api_takes_the_cookie_only_with_the_csrf_token_from_the_same_origin(client, base_url):
    tenant = await make_tenant()
    conversation = await open_conversation(client, tenant)
    close = f"/v1.0/conversations/{conversation}/close"
    async with InboxSession(base_url) as session:
        await session.login(tenant.admin)
        # Reads: the cookie is enough (SameSite keeps it off cross-site requests).
        listed = await session.http.get("/v1.0/conversations")
        assert listed.status_code == 200
        assert str(conversation) in {c["id"] for c in listed.json()["result"]}

        refused = [
            await session.http.post(close, headers=session.page_headers),  # no CSRF token
            await session.http.post(close, headers={**session.page_headers, "X-CSRFToken": "forged" * 20}),
            # Another port of this host is the same site (the cookie goes along) but not this origin.
            await session.http.post(
                close,
                headers={
                    "X-CSRFToken": session.csrf,
                    "Origin": "http://127.0.0.1:1",
                    "Sec-Fetch-Site": "same-site",
                },
            ),
            await session.http.post(
                close, headers={"X-CSRFToken": session.csrf, "Origin": "http://127.0.0.1:1"}
            ),
            await session.http.post(close, headers={"X-CSRFToken": session.csrf}),  # no origin at all
        ]
        assert [r.status_code for r in refused] == [403] * 5
        assert all(r.json()["error"]["reason"] == "forbidden" for r in refused)
        row = await Conversation.select(Conversation.status).where(Conversation.id == conversation).first()
        assert row["status"] == "open"

        closed = await session.api("POST", close)
        assert closed.status_code == 200, closed.text
        assert closed.json()["status"] == "closed"
        # Errors keep the API's envelope: the page shows its message.
        again = await session.api("POST", f"/v1.0/conversations/{conversation}/messages", json={"text": "hi"})
        assert again.status_code == 409
        assert again.json()["error"]["message"] == "the conversation is closed; reopen it to send"


async def test_bearer_clients_and_provider_hooks_never_meet_the_csrf_check(client, base_url):
    tenant = await make_tenant()
    conversation = await open_conversation(client, tenant)
    async with InboxSession(base_url) as session:
        await session.login(tenant.agent)
        # A bearer token (or ?token=) wins over the cookie, and needs no CSRF token.
        as_admin = await session.http.post(
            f"/v1.0/conversations/{conversation}/tags", json={"tags": ["vip"]}, headers=tenant.admin.headers
        )
        assert as_admin.status_code == 200, as_admin.text
        by_query = await session.http.post(
            f"/v1.0/conversations/{conversation}/close", params={"token": tenant.admin.token}
        )
        assert by_query.status_code == 200, by_query.text
        # A signed provider hook carrying the cookie by accident is still just a hook.
        params = sms_params(sender="+14155550111", to=tenant.account["number"])
        path, body, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
        hook = await session.http.post(path, content=body, headers=headers)
        assert hook.status_code == 200, hook.text
        # Without any credential it is the API's 401, as before.
    anonymous = await client.post(f"/v1.0/conversations/{conversation}/reopen")
    assert anonymous.status_code == 401


async def test_an_ended_session_shows_the_login_form_again(client, base_url):
    tenant = await make_tenant()
    async with InboxSession(base_url) as session:
        await session.login(tenant.agent)
        # A password change ends every token issued before it, the cookie's too.
        changed = await session.http.post(
            "/auth/password",
            json={"old_password": PASSWORD, "new_password": "another-password-1"},
            headers=tenant.agent.headers,
        )
        assert changed.status_code == 200
        page = await session.http.get("/inbox")
        assert page.status_code == 200
        assert "Your session has ended: log in again." in page.text
        assert '<label for="password">Password</label>' in page.text
        fragment = await session.http.get(f"/inbox/rows/{uuid.uuid4()}")
        assert fragment.status_code == 401


async def test_message_text_and_titles_render_escaped(client, base_url):
    tenant = await make_tenant()
    await inbound(client, tenant, "+14155550123", '<script>alert("x")</script><img src=x onerror=alert(1)>')
    row = await Conversation.select().where(Conversation.customer_id == tenant.customer_id).first()
    async with InboxSession(base_url) as session:
        await session.login(tenant.admin)
        pages = [
            (await session.http.get("/inbox", params={"view": "all"})).text,
            (await session.http.get(f"/inbox/conversations/{row['id']}")).text,
        ]
    for text in pages:
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in text
        assert "<script>alert" not in text and "<img src=x" not in text


async def test_pages_show_only_the_buttons_the_caller_may_use(client, base_url):
    tenant = await make_tenant()
    conversation = await open_conversation(client, tenant)
    assigned = await client.put(
        f"/v1.0/conversations/{conversation}",
        json={"owner_id": str(tenant.agent.id)},
        headers=tenant.admin.headers,
    )
    assert assigned.status_code == 200
    expected = {
        # (caller, buttons present, buttons absent)
        "admin": ({"assign-me", "assign-form", "unassign", "close", "tag-form"}, set()),
        "agent": ({"unassign", "close", "tag-form"}, {"assign-me", "assign-form"}),
        "other_agent": (set(), {"assign-me", "assign-form", "unassign", "close", "tag-form"}),
    }
    for name, (present, absent) in expected.items():
        async with InboxSession(base_url) as session:
            await session.login(getattr(tenant, name))
            page = await session.http.get(f"/inbox/conversations/{conversation}")
            assert page.status_code == 200, page.text
            ids = {
                i
                for i in ("assign-me", "assign-form", "unassign", "close", "tag-form")
                if f'id="{i}"' in page.text
            }
            assert present <= ids and not (absent & ids), (name, ids)
            # Everyone may reply (the API lets any agent of the customer send).
            assert '<label for="reply-text">Reply</label>' in page.text


async def test_plain_agents_get_only_mine_and_the_apis_refusal_for_the_rest(client, base_url):
    tenant = await make_tenant()
    async with InboxSession(base_url) as session:
        await session.login(tenant.agent)
        mine = await session.http.get("/inbox")
        assert ">Mine</a>" in mine.text and ">Unassigned</a>" not in mine.text and ">All</a>" not in mine.text
        for view in ("unassigned", "all"):
            refused = await session.http.get("/inbox", params={"view": view})
            assert refused.status_code == 403
            assert "an agent without admin or manager permission must pass its own owner_id" in refused.text
    async with InboxSession(base_url) as session:
        await session.login(tenant.manager)
        page = await session.http.get("/inbox", params={"view": "unassigned"})
        assert page.status_code == 200
        assert all(f">{tab}</a>" in page.text for tab in ("Mine", "Unassigned", "All"))


async def test_another_customers_conversations_are_404_on_pages_and_absent_from_fragments(client, base_url):
    home, foreign = await make_tenant(), await make_tenant("+15550002000")
    theirs = await open_conversation(client, foreign)
    async with InboxSession(base_url) as session:
        await session.login(home.admin)
        page = await session.http.get(f"/inbox/conversations/{theirs}")
        assert page.status_code == 404
        assert f"conversation {theirs} not found" in page.text
        assert (await session.http.get(f"/inbox/conversations/{theirs}/panels")).status_code == 404
        assert (await session.http.get(f"/inbox/rows/{theirs}", params={"view": "all"})).status_code == 204
        message = (
            await client.get(f"/v1.0/conversations/{theirs}/messages", headers=foreign.admin.headers)
        ).json()["result"][0]["id"]
        fragment = await session.http.get(f"/inbox/conversations/{theirs}/messages/{message}")
        assert fragment.status_code == 204
        assert (await session.http.get("/inbox/conversations/not-a-uuid")).status_code == 404


async def test_bad_filters_are_400_next_to_the_filter_in_the_apis_words(client, base_url):
    tenant = await make_tenant()
    async with InboxSession(base_url) as session:
        await session.login(tenant.admin)
        bad_tag = await session.http.get("/inbox", params={"view": "all", "tag": "no spaces!"})
        assert bad_tag.status_code == 400
        assert "is not valid: tags are 1-50 characters" in bad_tag.text
        assert (
            'id="filter-tag" name="tag" value="no spaces!" maxlength="50" aria-invalid="true"' in bad_tag.text
        )
        bad_view = await session.http.get("/inbox", params={"view": "everything"})
        assert bad_view.status_code == 400 and "view must be one of mine, unassigned, all" in bad_view.text


async def test_the_list_follows_activity_and_pages_and_filters(client, base_url):
    tenant = await make_tenant()
    senders = ["+14155550201", "+14155550202", "+14155550203"]
    for sender in senders:
        await inbound(client, tenant, sender, f"hello from {sender}")
    # The oldest conversation gets a new message: it is the newest activity now.
    await inbound(client, tenant, senders[0], "me again")
    ids = {
        r["peer_target"]: str(r["id"])
        for r in await Conversation.select().where(Conversation.customer_id == tenant.customer_id)
    }
    async with InboxSession(base_url) as session:
        await session.login(tenant.admin)
        first = await session.http.get("/inbox", params={"view": "unassigned", "page_size": "2"})
        order = [ids[s] for s in (senders[0], senders[2], senders[1])]
        assert first.text.index(order[0]) < first.text.index(order[1])
        assert order[2] not in first.text
        assert "me again" in first.text
        token = first.text.split("page_token=")[1].split('"')[0]
        second = await session.http.get(f"/inbox?view=unassigned&page_size=2&page_token={token}")
        assert order[2] in second.text and order[0] not in second.text
        peer = await session.http.get("/inbox", params={"view": "all", "peer": "(415) 555-0202"})
        assert ids[senders[1]] in peer.text and ids[senders[0]] not in peer.text
        # A row fragment answers only for conversations its list shows.
        row = await session.http.get(
            f"/inbox/rows/{ids[senders[1]]}", params={"view": "all", "status": "closed"}
        )
        assert row.status_code == 204
        row = await session.http.get(f"/inbox/rows/{ids[senders[1]]}", params={"view": "all"})
        assert row.status_code == 200 and f'id="row-{ids[senders[1]]}"' in row.text


class StatementCounter:
    """Counts the SQL statements run on behalf of one request (by its X-Request-ID)."""

    def __init__(self, monkeypatch) -> None:
        self.counts: dict[str, int] = {}
        original = PostgresEngine.run_querystring

        async def counting(engine, querystring, in_pool=True):
            request_id = (logs._context.get() or {}).get("request_id")
            if request_id:
                self.counts[request_id] = self.counts.get(request_id, 0) + 1
            return await original(engine, querystring, in_pool=in_pool)

        monkeypatch.setattr(PostgresEngine, "run_querystring", counting)


async def test_a_list_of_100_conversations_takes_as_many_statements_as_a_list_of_one(
    client, base_url, monkeypatch
):
    tenant = await make_tenant()
    agents = [tenant.agent, tenant.other_agent, tenant.manager]
    senders = [f"+1415556{n:04d}" for n in range(100)]
    for chunk in range(0, 100, 20):
        await asyncio.gather(*(inbound(client, tenant, s, f"text {s}") for s in senders[chunk : chunk + 20]))
    rows = await Conversation.select(Conversation.id).where(Conversation.customer_id == tenant.customer_id)
    assert len(rows) == 100
    for n, row in enumerate(rows):  # several owners and tags, so every lookup has work to do
        owner = agents[n % 3]
        await Conversation.update({Conversation.owner_id: owner.id, Conversation.owner_type: "agent"}).where(
            Conversation.id == row["id"]
        )
    async with InboxSession(base_url) as session:
        await session.login(tenant.admin)
        counter = StatementCounter(monkeypatch)
        pages = {}
        for size in ("1", "100"):
            request_id = f"inbox-n1-{size}-{uuid.uuid4().hex[:8]}"
            pages[size] = await session.http.get(
                "/inbox", params={"view": "all", "page_size": size}, headers={"X-Request-ID": request_id}
            )
            assert pages[size].status_code == 200
            pages[size] = (pages[size], counter.counts.get(request_id, 0))
    hundred, statements = pages["100"]
    assert hundred.text.count('class="row"') == 100
    assert all(s in hundred.text for s in ("Owner: agent", "Owner: other", "Owner: manager"))
    assert statements == pages["1"][1], (statements, pages["1"][1])
    # caller, agent row, latest event, the page, participants, owners
    print("statements per list page:", statements)
    assert statements <= 6, statements


async def test_the_inbox_stays_out_of_the_openapi_document_and_serves_its_own_files(client):
    document = (await client.get("/schema/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/inbox")]
    script = await client.get("/inbox/static/inbox.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "Last-Event-ID" in script.text
