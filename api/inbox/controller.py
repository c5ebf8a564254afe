"""/inbox: the agent inbox's pages (server-rendered with Jinja) and the fragments its script swaps
in when the live stream says something changed. Reads go through hub/ with the API's rules;
every change is made by the page's script through the public API (api/inbox/static/inbox.js)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from litestar.static_files import create_static_files_router
from litestar.utils.scope.state import ScopeState

from api.controllers.auth import client_address, token_for
from api.deps import Caller, caller_for_token
from api.inbox import views
from api.inbox.session import (
    INBOX_OPT,
    PAGE_HEADERS,
    accepted_token,
    cleared_session_cookie,
    session_cookie,
)
from hub import agents, conversations, inbox, messages
from hub.conversations import ListFilters
from hub.errors import BadRequest, HubError, NotFound, Unauthorized
from hub.permissions import ADMIN, MANAGER
from hub.settings import Settings
from hub.tags import normalize_tag

log = logging.getLogger("hub.inbox")

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# Changes with the static files, so browsers never run a stale script against a new page.
STATIC_VERSION = hashlib.sha256(
    b"".join(p.read_bytes() for p in sorted(STATIC.iterdir()) if p.is_file())
).hexdigest()[:12]

PAGE_SIZE = 50
MESSAGES_PAGE = 50
VIEW_NAMES = {"mine": "Mine", "unassigned": "Unassigned", "all": "All"}
STATUS_CHOICES = ("open", "closed", "any")
MAX_PEER = 320


@dataclass(frozen=True)
class ListParams:
    """The list a page shows, as its query string says."""

    view: str
    status: str = "open"
    tag: str = ""
    peer: str = ""

    @property
    def filtered(self) -> bool:
        return self.status != "open" or bool(self.tag or self.peer)

    def query(self) -> inbox.InboxQuery:
        status = None if self.status == "any" else self.status
        filters = ListFilters(status=status, tag=self.tag or None, peer=self.peer or None)
        return inbox.InboxQuery(view=self.view, filters=filters)

    def encoded(self, **extra: str) -> str:
        values = {"view": self.view, "status": self.status, "tag": self.tag, "peer": self.peer, **extra}
        return urlencode({k: v for k, v in values.items() if v})


def list_params(request: Request, caller: Caller) -> tuple[ListParams, str]:
    """The list's parameters and the field a bad one came from (400 with the API's words)."""
    query = request.query_params
    view = query.get("view") or "mine"
    status = query.get("status") or "open"
    tag = (query.get("tag") or "").strip()
    peer = (query.get("peer") or "").strip()
    params = ListParams(view=view if view in VIEW_NAMES else "mine", status=status, tag=tag, peer=peer)
    if view not in VIEW_NAMES:
        raise FieldError("view", BadRequest(f"view must be one of {', '.join(VIEW_NAMES)}"), params)
    if view not in inbox.views_for(caller.permission):
        try:
            inbox.owner_filter(caller.agent_id, caller.permission, view)
        except HubError as exc:
            raise FieldError("view", exc, ListParams(view="mine")) from exc
    if status not in STATUS_CHOICES:
        raise FieldError("status", BadRequest("status must be open, closed or any"), params)
    if tag:
        try:
            normalize_tag(tag)
        except HubError as exc:
            raise FieldError("tag", exc, params) from exc
    if len(peer) > MAX_PEER:
        raise FieldError("peer", BadRequest(f"peer must be at most {MAX_PEER} characters"), params)
    return params, ""


class FieldError(Exception):
    def __init__(self, field: str, error: HubError, params: ListParams) -> None:
        super().__init__(error.message)
        self.field, self.error, self.params = field, error, params


def me_view(caller: Caller, agent: dict[str, Any]) -> dict[str, Any]:
    role = "admin" if caller.permission & ADMIN else "manager" if caller.permission & MANAGER else ""
    return {
        "id": str(caller.agent_id),
        "name": agent["name"] or agent["username"],
        "is_admin": caller.is_admin_or_manager,
        "role": role,
    }


def page(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Template:
    csrf = ScopeState.from_scope(request.scope).csrf_token
    return Template(
        template_name=template,
        context={
            "csrf_token": csrf if isinstance(csrf, str) else "",
            "static_version": STATIC_VERSION,
            **context,
        },
        status_code=status_code,
        media_type="text/html",
    )


def fragment(template: str, context: dict[str, Any]) -> Template:
    return Template(template_name=template, context=context, media_type="text/html")


def safe_next(value: str) -> str:
    """Where to go after logging in: a page of the inbox, never another site."""
    if value.startswith("/inbox") and not value.startswith("//") and "\\" not in value:
        return value
    return "/inbox"


def login_page(
    request: Request, status_code: int = 200, error: str = "", notice: str = "", username: str = ""
) -> Template:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    next_page = safe_next(wanted if request.method == "GET" else "")
    response = page(
        request,
        "login.html",
        {"me": None, "error": error, "notice": notice, "next": next_page, "username": username},
        status_code,
    )
    if notice:
        response.cookies.append(cleared_session_cookie(request.app.state.settings))
    return response


async def session_caller(request: Request) -> tuple[Caller | None, str]:
    """The caller the session cookie names, or None and why the session ended ("" = none)."""
    token = accepted_token(request.scope)
    if not token:
        return None, ""
    try:
        return await caller_for_token(request, token), ""
    except Unauthorized:
        return None, "Your session has ended: log in again."


def error_page(request: Request, caller: Caller, me: dict[str, Any], exc: HubError) -> Template:
    heading = {403: "Not allowed", 404: "Not found"}.get(exc.status, "Something went wrong")
    return page(
        request,
        "error.html",
        {"me": me, "status": exc.status, "heading": heading, "message": exc.message},
        exc.status,
    )


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError as exc:
        raise NotFound(f"conversation {value[:40]} not found") from exc


class InboxController(Controller):
    path = "/inbox"
    include_in_schema = False
    opt = {INBOX_OPT: True}
    response_headers = PAGE_HEADERS

    @get("/")
    async def inbox_page(self, request: Request) -> Response:
        caller, ended = await session_caller(request)
        if caller is None:
            return login_page(request, notice=ended)
        agent = await agents.get_agent(caller.customer_id, caller.agent_id)
        me = me_view(caller, agent)
        last_event_id = await inbox.latest_event_seq(caller.customer_id)
        error, error_field, status_code = "", "", 200
        try:
            params, _ = list_params(request, caller)
        except FieldError as exc:
            params, error, error_field, status_code = (
                exc.params,
                exc.error.message,
                exc.field,
                exc.error.status,
            )
        rows: list[dict[str, Any]] = []
        next_token = ""
        page_token = request.query_params.get("page_token") or ""
        page_size = _page_size(request.query_params.get("page_size"))
        if not error:
            try:
                found, next_token = await inbox.list_page(
                    caller.customer_id,
                    caller.agent_id,
                    caller.permission,
                    params.query(),
                    page_size,
                    page_token,
                )
                rows = await list_rows(caller, found)
            except HubError as exc:
                error, status_code = exc.message, exc.status
                error_field = "peer" if params.peer else "tag" if params.tag else ""
        views_allowed = inbox.views_for(caller.permission)
        context = {
            "me": me,
            "last_event_id": last_event_id,
            "query": {
                "view": params.view,
                "status": params.status,
                "tag": params.tag,
                "peer": params.peer,
                "filtered": params.filtered,
            },
            "views": views_allowed,
            "view_names": VIEW_NAMES,
            "tab_queries": {
                v: ListParams(v, params.status, params.tag, params.peer).encoded() for v in views_allowed
            },
            "list_query": params.encoded(),
            "rows": rows,
            "next_token": next_token,
            "first_page": not page_token,
            "first_page_query": params.encoded(),
            "next_page_query": params.encoded(page_token=next_token),
            "error": error,
            "error_field": error_field,
        }
        return page(request, "inbox.html", context, status_code)

    @post("/login", status_code=303)
    async def login(self, request: Request) -> Response:
        form = await request.form()
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        next_page = safe_next(str(form.get("next") or ""))
        if not username or not password:
            return login_page(request, 400, "Enter your username and password.", username=username[:255])
        if len(username) > 255 or len(password) > 1024:
            return login_page(request, 400, "Username or password is too long.")
        settings: Settings = request.app.state.settings
        throttle = request.app.state.login_throttle
        address = client_address(request)
        try:
            await throttle.attempt(username, address)
            agent = await agents.authenticate(username, password)
            await throttle.succeeded(username, address)
        except HubError as exc:
            response = login_page(request, exc.status, exc.message, username=username)
            if retry := getattr(exc, "retry_after_s", None):
                response.headers["Retry-After"] = str(retry)
            return response
        token = token_for(settings, agent).token
        return Redirect(next_page, status_code=303, cookies=[session_cookie(settings, token)])

    @post("/logout", status_code=303)
    async def logout(self, request: Request) -> Response:
        return Redirect(
            "/inbox", status_code=303, cookies=[cleared_session_cookie(request.app.state.settings)]
        )

    @get("/rows/{conversation_id:str}")
    async def row_fragment(self, request: Request, conversation_id: FromPath[str]) -> Response:
        """The list row of a conversation when the list (query string) shows it, else 204."""
        caller, _ = await session_caller(request)
        if caller is None:
            return _gone()
        try:
            params, _ = list_params(request, caller)
            row = await inbox.listed_conversation(
                caller.customer_id, caller.agent_id, caller.permission, params.query(), _uuid(conversation_id)
            )
        except (HubError, FieldError):
            row = None
        if row is None:
            return Response(b"", status_code=204)
        rows = await list_rows(caller, [row])
        return fragment("row.html", {"row": rows[0]})

    @get("/conversations/{conversation_id:str}")
    async def conversation_page(self, request: Request, conversation_id: FromPath[str]) -> Response:
        caller, ended = await session_caller(request)
        if caller is None:
            return login_page(request, notice=ended)
        agent = await agents.get_agent(caller.customer_id, caller.agent_id)
        me = me_view(caller, agent)
        last_event_id = await inbox.latest_event_seq(caller.customer_id)
        before = request.query_params.get("before") or ""
        try:
            cid = _uuid(conversation_id)
            context = await conversation_context(request, caller, cid)
            found, older = await messages.list_messages(caller.customer_id, cid, MESSAGES_PAGE, before)
        except HubError as exc:
            return error_page(request, caller, me, exc)
        context.update(
            me=me,
            last_event_id=last_event_id,
            messages=[views.message_view(m) for m in reversed(found)],
            older_token=older,
            newest_page=not before,
        )
        return page(request, "conversation.html", context)

    @get("/conversations/{conversation_id:str}/panels")
    async def panels_fragment(self, request: Request, conversation_id: FromPath[str]) -> Response:
        """The conversation's head, details and reply channels, as they are now."""
        caller, _ = await session_caller(request)
        if caller is None:
            return _gone()
        try:
            context = await conversation_context(request, caller, _uuid(conversation_id))
        except HubError as exc:
            return Response(exc.message, status_code=exc.status, media_type="text/plain")
        return fragment("panels.html", context)

    @get("/conversations/{conversation_id:str}/messages/{message_id:str}")
    async def message_fragment(
        self, request: Request, conversation_id: FromPath[str], message_id: FromPath[str]
    ) -> Response:
        """A message of the conversation as it is now; 204 once it is deleted (or not there)."""
        caller, _ = await session_caller(request)
        if caller is None:
            return _gone()
        try:
            row = await messages.get_message(caller.customer_id, _uuid(message_id))
        except HubError:
            return Response(b"", status_code=204)
        if str(row["conversation_id"]) != conversation_id:
            return Response(b"", status_code=204)
        return fragment("message.html", {"message": views.message_view(row)})


def _gone() -> Response:
    return Response("log in again", status_code=401, media_type="text/plain")


def _page_size(raw: str | None) -> int:
    if raw and raw.isdigit() and 1 <= int(raw) <= 100:
        return int(raw)
    return PAGE_SIZE


async def list_rows(caller: Caller, found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of a list page: owners and participants read in one statement each."""
    ids = [r["id"] for r in found]
    live = await inbox.participants_by_conversation(ids)
    owners = await inbox.agent_names(caller.customer_id, [r["owner_id"] for r in found])
    return [views.row_view(r, live[str(r["id"])], owners) for r in found]


async def conversation_context(request: Request, caller: Caller, conversation_id: UUID) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    row = await conversations.get_conversation(caller.customer_id, conversation_id)
    live = await inbox.participants_by_conversation([conversation_id])
    rows = live[str(conversation_id)]
    accounts = await inbox.account_names(caller.customer_id, [p["account_id"] for p in rows])
    people = [views.participant_view(p, accounts) for p in rows]
    can = views.abilities(caller, row)
    agent_rows = await inbox.assignable_agents(caller.customer_id) if can["assign_menu"] else []
    owners = {a["id"]: a["name"] or a["username"] for a in agent_rows}
    if row["owner_id"] not in owners:
        owners.update(await inbox.agent_names(caller.customer_id, [row["owner_id"]]))
    choice = inbox.hub_choice(rows)
    flows = await inbox.conversation_activeflows(caller.customer_id, conversation_id)
    ui = settings.resolved_temporal_ui_url
    namespace = settings.temporal_namespace
    return {
        "conversation": views.conversation_view(row, owners),
        "participants": people,
        "choice": views.participant_view(choice, accounts) if choice else None,
        "can": can,
        "agents": [{"id": str(a["id"]), "name": a["name"] or a["username"]} for a in agent_rows],
        "assign_me_body": msgspec.json.encode({"owner_id": str(caller.agent_id)}).decode(),
        "activeflows": [
            {
                "id": str(f["id"]),
                "flow_name": f["flow_name"],
                "status": f["status"],
                "reason": f["reason"],
                "tm_create": f["tm_create"],
                "link": views.temporal_links(ui, namespace, conversation_id, f["workflow_id"]),
            }
            for f in flows
        ],
        "all_flows_link": views.temporal_links(ui, namespace, conversation_id),
    }


def static_files():
    return create_static_files_router(
        path="/inbox/static",
        directories=[STATIC],
        include_in_schema=False,
        name="inbox-static",
    )


def register_filters(engine) -> None:
    env = engine.engine
    env.filters["iso"] = views.iso
    env.filters["short_time"] = views.short_time
