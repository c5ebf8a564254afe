"""/v1.0/contacts: the people behind peer addresses; any agent of the customer manages them."""

from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import ContactCreate, ContactPage, ContactUpdate, given
from hub import contacts
from hub.models import ContactOut


class ContactController(Controller):
    path = "/v1.0/contacts"
    tags = ["contacts"]

    @get("/")
    async def list_contacts(
        self, caller: NamedDependency[Caller], page_size: PageSize = 100, page_token: PageToken = ""
    ) -> ContactPage:
        result, token = await contacts.list_contacts(caller.customer_id, page_size, page_token)
        return ContactPage(result=result, next_page_token=token)

    @post("/", status_code=200)
    async def create_contact(
        self, caller: NamedDependency[Caller], data: JSONBody[ContactCreate]
    ) -> ContactOut:
        return await contacts.create_contact(
            caller.customer_id, data.name, data.detail, msgspec.to_builtins(data.addresses)
        )

    @get("/{contact_id:str}")
    async def get_contact(self, caller: NamedDependency[Caller], contact_id: FromPath[UUID]) -> ContactOut:
        return await contacts.get_contact(caller.customer_id, contact_id)

    @put("/{contact_id:str}")
    async def update_contact(
        self, caller: NamedDependency[Caller], contact_id: FromPath[UUID], data: JSONBody[ContactUpdate]
    ) -> ContactOut:
        values = given(data)
        if "addresses" in values:
            values["addresses"] = msgspec.to_builtins(values["addresses"])
        return await contacts.update_contact(caller.customer_id, contact_id, values)

    @delete("/{contact_id:str}", status_code=200)
    async def delete_contact(self, caller: NamedDependency[Caller], contact_id: FromPath[UUID]) -> ContactOut:
        return await contacts.delete_contact(caller.customer_id, contact_id)
