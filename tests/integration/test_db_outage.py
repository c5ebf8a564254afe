"""PostgreSQL briefly unreachable: the API answers 503 (never 200 for an unstored message, never
500), and recovers by itself once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses

import httpx

from hub.tables import Message
from tests.helpers import free_port, make_tenant, serving, signed_sms, sms_params


class FlakyProxy:
    """A TCP proxy in front of PostgreSQL that can drop every connection and refuse new ones."""

    def __init__(self, upstream_port: int = 5432) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.down = False
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def outage(self) -> None:
        self.down = True
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def stop(self) -> None:
        self.outage()
        self.server.close()


async def test_database_outage_is_503_and_recovers(settings, pg_engine, pg):
    tenant = await make_tenant()
    proxy = FlakyProxy()
    await proxy.start()
    dsn = settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert dsn != settings.database_url
    flaky = dataclasses.replace(settings, database_url=dsn)
    try:
        async with (
            serving(flaky, restore_engine=pg_engine) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as http,
        ):

            async def post(body: str) -> httpx.Response:
                params = sms_params(body=body)
                path, payload, headers = signed_sms(tenant.account["id"], tenant.auth_token, params)
                return await http.post(path, content=payload, headers=headers)

            assert (await post("before")).status_code == 200

            proxy.outage()
            down = await post("during")
            assert down.status_code == 503, down.text
            assert down.json()["error"]["reason"] == "service_unavailable"
            listing = await http.get("/v1.0/conversations", headers=tenant.admin.headers)
            assert listing.status_code == 503

            proxy.down = False
            after = await post("after")
            assert after.status_code == 200, after.text
    finally:
        await proxy.stop()
    texts = (
        await Message.select(Message.text)
        .where(Message.account_id == tenant.account["id"])
        .output(as_list=True)
    )
    assert sorted(texts) == ["after", "before"]
