"""A shard round waiting between polls wakes as soon as this process's relay queued deliveries."""

from __future__ import annotations

import asyncio

from activities.inputs import DeliverShardInput
from activities.publish import EventPublisher
from activities.webhook_http import WebhookSender
from activities.webhooks import ShardRound, WebhookActivities
from hub.settings import Settings


async def test_a_waiting_shard_round_wakes_when_the_relay_queued_something():
    acts = WebhookActivities(WebhookSender(True, 5), EventPublisher(""), Settings(webhook_poll_interval_s=30))
    rounds = [ShardRound(acts, DeliverShardInput(shard=s, shards=2, round_s=60)) for s in range(2)]
    waiting = [asyncio.create_task(r._wait_for_work()) for r in rounds]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiting), "nothing relayed: the rounds wait for their poll"
    acts._wake_shards()
    # Every waiting round wakes, long before its 30 s poll.
    await asyncio.wait_for(asyncio.gather(*waiting), timeout=1)
    # The next wait is for the next relayed batch: the wake-up is not left set.
    again = asyncio.create_task(rounds[0]._wait_for_work())
    await asyncio.sleep(0.05)
    assert not again.done()
    acts._wake_shards()
    await asyncio.wait_for(again, timeout=1)


async def test_the_poll_still_ends_a_wait_without_a_relay():
    acts = WebhookActivities(
        WebhookSender(True, 5), EventPublisher(""), Settings(webhook_poll_interval_s=0.05)
    )
    round_ = ShardRound(acts, DeliverShardInput(shard=0, shards=1, round_s=60))
    await asyncio.wait_for(round_._wait_for_work(), timeout=1)
