"""A burst of 10,000 events reaches the receiver: every one, once, in order per conversation. Also
replays the delivery workflows' recorded histories against the current workflow code."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from temporalio.worker import Replayer

from api.worker import WORKFLOWS
from hub import events
from hub.db import current_engine, transaction
from hub.tables import WebhookDelivery
from tests.helpers import make_tenant, wait_for
from tests.webhook_receiver import Receiver
from workflows.webhooks import RELAY_WORKFLOW_ID, shard_workflow_id

pytestmark = pytest.mark.usefixtures("dispatchers")

HISTORIES = Path(__file__).resolve().parents[1] / "replay" / "histories"
BURST = 10_000
CONVERSATIONS = 200


async def test_a_burst_of_10000_events_arrives_complete_and_in_order(client, settings, temporal_env):
    tenant = await make_tenant()
    receiver = await Receiver().start()
    try:
        response = await client.put(
            "/v1.0/customer", json={"webhook_uri": receiver.url}, headers=tenant.admin.headers
        )
        receiver.secrets.append(response.json()["webhook_secret"])
        conversations = [uuid.uuid4() for _ in range(CONVERSATIONS)]
        started = time.monotonic()
        for chunk in range(0, BURST, 1000):
            rows = [
                events.event_row(
                    events.MESSAGE_UPDATED,
                    tenant.customer_id,
                    {"conversation_id": str(conversations[n % CONVERSATIONS]), "n": n},
                    conversation_id=conversations[n % CONVERSATIONS],
                )
                for n in range(chunk, chunk + 1000)
            ]
            async with transaction(current_engine()):
                await events.emit(*rows)
        inserted = time.monotonic()

        await wait_for(lambda: asyncio.sleep(0, len(receiver.received) >= BURST), within=300, interval=0.2)
        elapsed = time.monotonic() - started
    finally:
        await receiver.stop()

    ids = receiver.ids()
    assert len(set(ids)) == BURST
    assert len(ids) == BURST, "no event twice"
    assert receiver.bad_signatures == 0
    per_conversation: dict[str, list[int]] = defaultdict(list)
    for r in receiver.received:
        per_conversation[r.body["data"]["conversation_id"]].append(r.body["data"]["n"])
    assert len(per_conversation) == CONVERSATIONS
    assert all(ns == sorted(ns) for ns in per_conversation.values())
    delivered = await WebhookDelivery.count().where(
        WebhookDelivery.customer_id == tenant.customer_id, WebhookDelivery.status == "delivered"
    )
    assert delivered == BURST
    print(
        f"\nwebhook burst: {BURST} events inserted in {inserted - started:.2f} s, all delivered after "
        f"{elapsed:.2f} s: {BURST / elapsed:.0f} events/s"
    )

    # The relay and shard workflows that just did this replay deterministically; with
    # HUB_RECORD_HISTORIES=1 they become the stored histories tests/replay replays from then on.
    replayer = Replayer(workflows=WORKFLOWS)
    for name, workflow_id in (("webhook_relay", RELAY_WORKFLOW_ID), ("webhook_shard", shard_workflow_id(0))):
        history = await temporal_env.client.get_workflow_handle(workflow_id).fetch_history()
        await replayer.replay_workflow(history)
        if os.environ.get("HUB_RECORD_HISTORIES") == "1":
            path = HISTORIES / f"{name}.json"
            path.write_text(json.dumps(json.loads(history.to_json()), indent=1))
