"""Helpers of the inbox tests: a browser-like HTTP session (login form, session cookie, CSRF token)."""

from __future__ import annotations

import html
import re

import httpx

from tests.helpers import Member

PASSWORD = "password-123"  # tests.helpers.make_member's
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def csrf_of(page: str) -> str:
    found = _META.search(page)
    assert found, "the page carries no CSRF token"
    return html.unescape(found.group(1))


class InboxSession:
    """An httpx client holding the inbox's cookies, sending what a same-origin page sends."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30, follow_redirects=False)
        self.csrf = ""

    async def __aenter__(self) -> InboxSession:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    @property
    def page_headers(self) -> dict[str, str]:
        return {"Origin": self.base_url, "Sec-Fetch-Site": "same-origin"}

    async def login(self, member: Member | str, password: str = PASSWORD) -> httpx.Response:
        username = member if isinstance(member, str) else member.username
        form = await self.http.get("/inbox")
        self.csrf = csrf_of(form.text)
        response = await self.http.post(
            "/inbox/login",
            data={"username": username, "password": password, "_csrf_token": self.csrf},
            headers=self.page_headers,
        )
        if response.status_code == 303:
            page = await self.http.get("/inbox")
            self.csrf = csrf_of(page.text)
        return response

    async def api(self, method: str, url: str, **kwargs) -> httpx.Response:
        """An API call as the inbox's script makes it: cookie, CSRF header, same origin."""
        headers = {"X-CSRFToken": self.csrf, **self.page_headers, **kwargs.pop("headers", {})}
        return await self.http.request(method, url, headers=headers, **kwargs)
