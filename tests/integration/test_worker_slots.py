"""The worker's concurrency: how many workflow tasks and local activities it runs at once."""

from __future__ import annotations

import dataclasses

import httpx

from api.worker import build_worker
from hub.settings import Settings


def test_slots_come_from_the_settings():
    parsed = Settings.from_env({"HUB_WORKER_WORKFLOW_TASKS": "7", "HUB_WORKER_LOCAL_ACTIVITIES": "9"})
    assert (parsed.worker_workflow_tasks, parsed.worker_local_activities) == (7, 9)
    # Bounded by default: the SDK's 100 let bursts outlive the workflow task timeout.
    assert 0 < Settings().worker_workflow_tasks <= 50 and 0 < Settings().worker_local_activities <= 50


async def test_the_worker_runs_with_the_configured_slots(worker, settings: Settings):
    config = worker.config()
    assert config["max_concurrent_workflow_tasks"] == settings.worker_workflow_tasks
    assert config["max_concurrent_local_activities"] == settings.worker_local_activities


async def test_zero_leaves_the_sdk_default(temporal_env, settings: Settings):
    unbounded = dataclasses.replace(
        settings,
        temporal_task_queue=f"{settings.temporal_task_queue}-unbounded",
        worker_workflow_tasks=0,
        worker_local_activities=0,
    )
    async with httpx.AsyncClient() as http:
        config = build_worker(temporal_env.client, unbounded, http).config()
    assert config.get("max_concurrent_workflow_tasks") is None
    assert config.get("max_concurrent_local_activities") is None
