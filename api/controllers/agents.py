"""/v1.0/agents: admin and manager manage agents; every agent reads those of its customer."""

from uuid import UUID

import msgspec
from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from api.deps import Caller
from api.params import PageSize, PageToken
from api.schemas import AgentCreate, AgentPage, AgentUpdate, given
from hub import agents
from hub.errors import BadRequest
from hub.models import AgentOut
from hub.permissions import check_grant, check_manage


def agent_out(row: dict) -> AgentOut:
    return msgspec.convert(row, AgentOut, strict=False)


class AgentController(Controller):
    path = "/v1.0/agents"
    tags = ["agents"]

    @get("/")
    async def list_agents(
        self, caller: NamedDependency[Caller], page_size: PageSize = 100, page_token: PageToken = ""
    ) -> AgentPage:
        rows, token = await agents.list_agents(caller.customer_id, page_size, page_token)
        return AgentPage(result=[agent_out(r) for r in rows], next_page_token=token)

    @post("/", status_code=200)
    async def create_agent(self, caller: NamedDependency[Caller], data: JSONBody[AgentCreate]) -> AgentOut:
        caller.require_admin_or_manager()
        check_grant(caller.permission, data.permission)
        row = await agents.create_agent(
            caller.customer_id, data.username, data.password, data.name, data.detail, data.permission
        )
        return agent_out(row)

    @get("/{agent_id:str}")
    async def get_agent(self, caller: NamedDependency[Caller], agent_id: FromPath[UUID]) -> AgentOut:
        return agent_out(await agents.get_agent(caller.customer_id, agent_id))

    @put("/{agent_id:str}")
    async def update_agent(
        self, caller: NamedDependency[Caller], agent_id: FromPath[UUID], data: JSONBody[AgentUpdate]
    ) -> AgentOut:
        caller.require_admin_or_manager()
        target = await agents.get_agent(caller.customer_id, agent_id)
        check_manage(caller.permission, target["permission"])
        values = given(data)
        if agent_id == caller.agent_id and "password" in values:
            # A stolen token must not lock the owner out: one's own password needs the old one.
            raise BadRequest("change your own password with POST /auth/password (it needs the old one)")
        if "permission" in values:
            check_grant(caller.permission, values["permission"])
            if agent_id == caller.agent_id and values["permission"] != caller.permission:
                raise BadRequest("an agent cannot change its own permission")
        return agent_out(await agents.update_agent(caller.customer_id, agent_id, values))

    @delete("/{agent_id:str}", status_code=200)
    async def delete_agent(self, caller: NamedDependency[Caller], agent_id: FromPath[UUID]) -> AgentOut:
        caller.require_admin_or_manager()
        if agent_id == caller.agent_id:
            raise BadRequest("an agent cannot delete itself")
        target = await agents.get_agent(caller.customer_id, agent_id)
        check_manage(caller.permission, target["permission"])
        return agent_out(await agents.delete_agent(caller.customer_id, agent_id))
