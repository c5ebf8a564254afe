"""PostgreSQL briefly unreachable: the API answers 503 (never 200 for an unstored message, never
500), and recovers by itself once the database is back."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx

from hub.tables import Message
from tests.helpers import FlakyProxy, make_tenant, serving, signed_sms, sms_params


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


async def test_a_connection_never_given_back_does_not_keep_the_shutdown_waiting(settings, pg, monkeypatch):
    """hub.db.stop waits POOL_CLOSE_TIMEOUT_S for the connections in use, then closes them: the
    transaction left open is rolled back by PostgreSQL, and the pool is gone."""
    from hub import db

    monkeypatch.setattr(db, "POOL_CLOSE_TIMEOUT_S", 0.5)
    engine = await db.open_engine(settings.resolved_database_url)
    await engine.start_connection_pool(min_size=1, max_size=2)  # its own pool; the tables stay bound
    held = await engine.pool.acquire()
    await held.execute("BEGIN")
    pid = held.get_server_pid()
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(db.stop(engine), 10)
    assert asyncio.get_running_loop().time() - started < 5 and engine.pool is None
    other = await pg.get_new_connection()
    try:
        for _ in range(200):  # the backend ends once it sees its client gone
            if not await other.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
                break
            await asyncio.sleep(0.025)
        else:
            raise AssertionError("the held connection's backend is still there")
    finally:
        await other.close()
