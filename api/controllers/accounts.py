"""/v1.0/accounts: channel accounts, admin and manager only; secrets are write-only."""

from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import AccountCreate, AccountPage, AccountUpdate, given
from hub import accounts
from hub.models import AccountOut


def account_out(row: dict) -> AccountOut:
    return msgspec.convert(row, AccountOut, strict=False)


class AccountController(Controller):
    path = "/v1.0/accounts"
    tags = ["accounts"]

    @get("/")
    async def list_accounts(
        self, caller: NamedDependency[Caller], page_size: PageSize = 100, page_token: PageToken = ""
    ) -> AccountPage:
        caller.require_admin_or_manager()
        rows, token = await accounts.list_accounts(caller.customer_id, page_size, page_token)
        return AccountPage(result=[account_out(r) for r in rows], next_page_token=token)

    @post("/", status_code=200)
    async def create_account(
        self, caller: NamedDependency[Caller], data: JSONBody[AccountCreate]
    ) -> AccountOut:
        caller.require_admin_or_manager()
        return account_out(await accounts.create_account(caller.customer_id, msgspec.structs.asdict(data)))

    @get("/{account_id:str}")
    async def get_account(self, caller: NamedDependency[Caller], account_id: FromPath[UUID]) -> AccountOut:
        caller.require_admin_or_manager()
        return account_out(await accounts.get_account(caller.customer_id, account_id))

    @put("/{account_id:str}")
    async def update_account(
        self, caller: NamedDependency[Caller], account_id: FromPath[UUID], data: JSONBody[AccountUpdate]
    ) -> AccountOut:
        caller.require_admin_or_manager()
        return account_out(await accounts.update_account(caller.customer_id, account_id, given(data)))

    @delete("/{account_id:str}", status_code=200)
    async def delete_account(self, caller: NamedDependency[Caller], account_id: FromPath[UUID]) -> AccountOut:
        caller.require_admin_or_manager()
        return account_out(await accounts.delete_account(caller.customer_id, account_id))
