"""GET /readyz names the dependency that is down (PostgreSQL, Temporal, Redis), answers within its
bound when one hangs, and is ready again once they are back, without a restart."""

from __future__ import annotations

import dataclasses

import httpx

from tests.helpers import FlakyProxy, serving, wait_for


async def test_readiness_names_what_is_down_and_recovers(settings, pg_engine, pg):
    temporal_host, _, temporal_port = settings.temporal_address.rpartition(":")
    proxies = {
        "postgresql": FlakyProxy(5432),
        "temporal": FlakyProxy(int(temporal_port)),
        "redis": FlakyProxy(6379),
    }
    for proxy in proxies.values():
        await proxy.start()
    pg_port = proxies["postgresql"].port
    flaky = dataclasses.replace(
        settings,
        database_url=settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{pg_port}"),
        temporal_address=f"{temporal_host}:{proxies['temporal'].port}",
        redis_url=settings.redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{proxies['redis'].port}"),
    )
    assert flaky.database_url != settings.database_url and flaky.redis_url != settings.redis_url
    names = {"postgresql": "PostgreSQL", "temporal": "Temporal", "redis": "Redis"}
    try:
        # A hung probe would exceed this timeout and fail the test.
        async with (
            serving(flaky, restore_engine=pg_engine) as url,
            httpx.AsyncClient(base_url=url, timeout=5) as http,
        ):

            last: list[str] = []

            async def ready() -> bool:
                answer = await http.get("/readyz")
                last[:] = [answer.text]
                return answer.status_code == 200 and answer.json()["status"] == "ready"

            await wait_for(ready, within=20)
            body = (await http.get("/readyz")).json()
            assert body["checks"] == {"postgresql": "ok", "temporal": "ok", "redis": "ok"}

            for name, proxy in proxies.items():
                proxy.outage()
                down = await http.get("/readyz")
                assert down.status_code == 503, (name, down.text)
                error = down.json()["error"]
                assert error["reason"] == "service_unavailable"
                assert error["request_id"] == down.headers["X-Request-ID"]
                assert f"{names[name]} unreachable" in error["message"], error["message"]
                others = {k for k in names if k != name}
                assert {k for k, v in down.json()["checks"].items() if v == "ok"} == others
                assert (await http.get("/healthz")).status_code == 200  # alive, just not ready
                proxy.restore()
                await wait_for(ready, within=30)

            for proxy in proxies.values():
                proxy.hang()
            hung = await http.get("/readyz")
            assert hung.status_code == 503, hung.text
            assert all(v != "ok" for v in hung.json()["checks"].values()), hung.text
            for proxy in proxies.values():
                proxy.restore()
            try:
                await wait_for(ready, within=30)
            except AssertionError:
                raise AssertionError(last) from None
    finally:
        for proxy in proxies.values():
            await proxy.stop()
