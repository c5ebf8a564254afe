"""The worker's metrics endpoint: serves the hub's metrics, off with port 0, and a port in use is a
one-line error naming the setting."""

from __future__ import annotations

import httpx
import pytest

from api.metrics import start_worker_metrics
from hub.settings import Settings
from tests.helpers import free_port


async def test_worker_metrics_endpoint_serves_and_names_its_setting_when_the_port_is_taken():
    assert await start_worker_metrics(Settings(worker_metrics_port=0)) is None
    settings = Settings(worker_metrics_port=free_port())
    runner = await start_worker_metrics(settings)
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{settings.worker_metrics_port}/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain")
        for name in ("hub_outbound_messages", "hub_activeflow_ends", "hub_webhook_attempts"):
            assert f"# TYPE {name}_total counter" in answer.text or f"# TYPE {name} counter" in answer.text
        with pytest.raises(SystemExit, match="HUB_WORKER_METRICS_PORT"):
            await start_worker_metrics(settings)
    finally:
        await runner.cleanup()
