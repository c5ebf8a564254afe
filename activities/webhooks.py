"""Activities of the webhook relay and delivery shards. Each call is a round of `round_s` seconds.

A shard round keeps one lane per order key (a conversation): deliveries of a lane go out one
after another in event order, lanes run side by side under a shard-wide and a per-customer limit.
A failed attempt parks its lane until the retry is due; other lanes are not held up."""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from temporalio import activity

from activities.inputs import DeliverShardInput, DeliverShardResult, RelayInput, RelayResult
from activities.publish import EventPublisher
from activities.webhook_http import WebhookSender
from hub import dispatch, metrics, webhooks
from hub.dispatch import Head, QueuedDelivery
from hub.repo import now
from hub.settings import Settings

log = logging.getLogger("hub.webhooks")

FRESH_BATCH = 1000
LANE_PAGE = 200
# A customer's endpoint settings are read again after this long (a PUT applies within it).
ENDPOINT_TTL_S = 1.0
NO_ENDPOINT = "no webhook is configured"


class WebhookActivities:
    def __init__(self, sender: WebhookSender, publisher: EventPublisher, settings: Settings) -> None:
        self.sender = sender
        self.publisher = publisher
        self.settings = settings
        # Read once, so a malformed HUB_WEBHOOK_RETRY_SCHEDULE_S stops the worker at start.
        self.schedule = settings.resolved_webhook_retry_schedule
        # Set (and replaced) when this process's relay queued deliveries: the shard rounds of this
        # process take them at once instead of at their next poll. Rounds in other processes poll.
        self._relayed: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def relayed(self) -> asyncio.Event:
        """What a shard round waits on between polls (one per event loop: an Event is bound to
        the loop that first waits on it)."""
        loop = asyncio.get_running_loop()
        if self._relayed is None or self._relayed[0] is not loop:
            self._relayed = (loop, asyncio.Event())
        return self._relayed[1]

    def _wake_shards(self) -> None:
        if self._relayed is not None:
            self._relayed[1].set()
            self._relayed = None

    @activity.defn(name="relay_events")
    async def relay_events(self, data: RelayInput) -> RelayResult:
        """Moves outbox events to the live stream and the delivery queue until the round ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + data.round_s
        relayed = 0
        while loop.time() < deadline:
            rows = await dispatch.relay_batch(data.batch_size)
            if rows:
                relayed += len(rows)
                self._wake_shards()
                await self._publish(rows)
            activity.heartbeat(relayed)
            if len(rows) < data.batch_size:
                await asyncio.sleep(self.settings.webhook_poll_interval_s)
        return RelayResult(relayed=relayed)

    async def _publish(self, rows: list[dict]) -> None:
        try:
            await self.publisher.publish(rows)
        except Exception as exc:
            # The stream is best effort: its clients resume from the outbox with Last-Event-ID,
            # and webhooks must not stall because Redis does.
            log.warning("live stream publish of %d events failed: %s", len(rows), exc)

    @activity.defn(name="deliver_webhooks")
    async def deliver_webhooks(self, data: DeliverShardInput) -> DeliverShardResult:
        return await ShardRound(self, data).run()


@dataclass
class Lane:
    """The deliveries of one order key this round. `from_db`: pages of the key's pending deliveries
    are still to be read (the key had pending ones when the lane started)."""

    key: UUID
    from_db: bool
    last_seq: int = -1
    # A later delivery arrived while a page was being read: read once more before leaving pages.
    read_again: bool = False
    queue: deque[QueuedDelivery] = field(default_factory=deque)


class ShardRound:
    def __init__(self, acts: WebhookActivities, data: DeliverShardInput) -> None:
        self.settings = acts.settings
        self.acts = acts
        self.sender = acts.sender
        self.data = data
        self.schedule = acts.schedule
        self.loop = asyncio.get_running_loop()
        self.lanes: dict[UUID, Lane] = {}
        # Keys waiting for a retry: key -> (due, seq of the delivery that failed); and a heap of dues.
        self.parked: dict[UUID, tuple[datetime, int]] = {}
        self.dues: list[tuple[datetime, int, UUID]] = []
        # Delivery ids waiting in a lane's queue, and being posted.
        self.queued: set[UUID] = set()
        self.inflight: set[UUID] = set()
        # Delivery id -> loop time its outcome was stored: tells a replay from a stale read.
        self.settled: dict[UUID, float] = {}
        self.pool = asyncio.Semaphore(acts.settings.webhook_concurrency)
        self.customer_slots: dict[UUID, asyncio.Semaphore] = {}
        self.endpoints: dict[UUID, tuple[float, asyncio.Task]] = {}
        self.tasks: set[asyncio.Task] = set()
        # Group commit of delivered outcomes: lanes wait for their outcome to be stored (so a
        # restart never posts a lane's next delivery before its previous one is recorded), and
        # what arrives while one write runs goes in the next, as one UPDATE.
        self.to_record: list[tuple[UUID, int, int, asyncio.Future]] = []
        self.recorder: asyncio.Task | None = None
        self.failure: BaseException | None = None
        self.stopping = False
        self.result = DeliverShardResult()

    async def run(self) -> DeliverShardResult:
        deadline = self.loop.time() + self.data.round_s
        try:
            for head in await dispatch.pending_heads(self.data.shard, self.data.shards):
                self._start_or_park(head)
            while self.loop.time() < deadline:
                self._raise_lane_failure()
                read_at = self.loop.time()
                fresh = await dispatch.take_fresh(self.data.shard, self.data.shards, FRESH_BATCH)
                for delivery in fresh:
                    self._route(delivery, read_at)
                self._unpark_due()
                activity.heartbeat(self.result.delivered)
                if len(fresh) < FRESH_BATCH:
                    await self._wait_for_work()
            # Posts in flight finish (they are bounded by the attempt timeout); no new ones start.
            self.stopping = True
            while self.tasks:
                await asyncio.wait(set(self.tasks), timeout=self.settings.webhook_poll_interval_s)
                activity.heartbeat(self.result.delivered)
            self._raise_lane_failure()
        except BaseException:
            # Cancelled (worker shutdown) or failed: whatever is unsettled stays pending for the
            # next round, which may post it again under the same webhook-id.
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            if self.recorder is not None:
                self.recorder.cancel()
                await asyncio.gather(self.recorder, return_exceptions=True)
            raise
        finally:
            for _, task in self.endpoints.values():
                task.cancel()
        return self.result

    async def _wait_for_work(self) -> None:
        """Until the next poll, or sooner when this process's relay queued deliveries."""
        try:
            await asyncio.wait_for(self.acts.relayed().wait(), self.settings.webhook_poll_interval_s)
        except TimeoutError:
            pass

    def _raise_lane_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    # --- which deliveries go where -------------------------------------------------------------

    def _start_or_park(self, head: Head) -> None:
        if head.order_key in self.lanes:
            return
        if head.next_attempt_at is not None and head.next_attempt_at > now():
            self._park(head.order_key, head.next_attempt_at, head.event_seq)
        else:
            self._start(head.order_key, from_db=True)

    def _admit(self, delivery: QueuedDelivery, read_at: float) -> bool:
        """Whether a delivery read as pending (at loop time `read_at`) may join a lane: not when it
        is queued or in flight already, nor when its outcome was stored after the read began."""
        if delivery.id in self.queued or delivery.id in self.inflight:
            return False
        settled_at = self.settled.get(delivery.id)
        if settled_at is not None:
            if settled_at >= read_at:
                return False  # a stale read of what was just settled
            del self.settled[delivery.id]  # settled before the read and pending again: replayed
        return True

    def _enqueue(self, lane: Lane, delivery: QueuedDelivery) -> None:
        self.queued.add(delivery.id)
        lane.queue.append(delivery)

    def _route(self, delivery: QueuedDelivery, read_at: float) -> None:
        """A new or replayed delivery, just taken from the shard's inbox."""
        if not self._admit(delivery, read_at):
            return
        key = delivery.order_key
        lane = self.lanes.get(key)
        if lane is not None:
            if lane.from_db and delivery.event_seq > lane.last_seq:
                lane.read_again = True  # a page of the lane reads it, in order
            else:
                # Behind what the lane has read already (a replay, a late commit): next in line.
                self._enqueue(lane, delivery)
            return
        parked = self.parked.get(key)
        if parked is not None:
            # Behind the parked delivery it waits; the parked one or an earlier one (replayed)
            # goes now, and the lane reads the key's deliveries in order from there.
            if delivery.event_seq <= parked[1]:
                del self.parked[key]
                self._start(key, from_db=True)
            return
        # No lane and nothing parked: this key has no other pending delivery.
        self._enqueue(self._start(key, from_db=False), delivery)

    def _park(self, key: UUID, due: datetime, seq: int) -> None:
        self.parked[key] = (due, seq)
        heapq.heappush(self.dues, (due, seq, key))

    def _unpark_due(self) -> None:
        stamp = now()
        while self.dues and self.dues[0][0] <= stamp:
            due, seq, key = heapq.heappop(self.dues)
            if self.parked.get(key) == (due, seq) and key not in self.lanes:
                del self.parked[key]
                self._start(key, from_db=True)

    def _start(self, key: UUID, from_db: bool) -> Lane:
        lane = self.lanes[key] = Lane(key, from_db)
        task = asyncio.create_task(self._drive(lane))
        self.tasks.add(task)
        task.add_done_callback(self._lane_done)
        return lane

    def _lane_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None and self.failure is None:
            self.failure = task.exception()

    # --- one lane ----------------------------------------------------------------------------------

    async def _drive(self, lane: Lane) -> None:
        try:
            while not self.stopping:
                if not lane.queue and lane.from_db:
                    read_at = self.loop.time()
                    page = await dispatch.pending_for_key(lane.key, lane.last_seq, LANE_PAGE)
                    if page:
                        lane.last_seq = max(lane.last_seq, page[-1].event_seq)
                        for delivery in page:
                            if self._admit(delivery, read_at):
                                self._enqueue(lane, delivery)
                        continue
                    if lane.read_again:
                        lane.read_again = False
                        continue
                    lane.from_db = False
                if not lane.queue:
                    break
                delivery = lane.queue.popleft()
                self.queued.discard(delivery.id)
                if delivery.next_attempt_at is not None and delivery.next_attempt_at > now():
                    self._park(lane.key, delivery.next_attempt_at, delivery.event_seq)
                    break
                if not await self._deliver(delivery):
                    break
        finally:
            # What the lane leaves unsent stays pending: a later lane (or round) reads it again.
            for delivery in lane.queue:
                self.queued.discard(delivery.id)
            if self.lanes.get(lane.key) is lane:
                del self.lanes[lane.key]

    async def _deliver(self, delivery: QueuedDelivery) -> bool:
        """One attempt, its outcome stored. True when the delivery is settled and the lane moves on;
        False when it waits (for its retry, the lane parks; or for the next round)."""
        self.inflight.add(delivery.id)
        try:
            attempts = delivery.attempts + 1
            endpoint = await self._endpoint(delivery.customer_id)
            if endpoint is None or endpoint.disabled_reason:
                # Read again before giving up: a PUT may have enabled it since the cached read.
                self.endpoints.pop(delivery.customer_id, None)
                endpoint = await self._endpoint(delivery.customer_id)
            if endpoint is None or endpoint.disabled_reason:
                error = webhooks.disabled_error(endpoint.disabled_reason) if endpoint else NO_ENDPOINT
                await dispatch.record_failure(delivery.id, attempts, None, error, None)
                self._settled(delivery, delivered=False)
                return True
            async with self._customer_slot(delivery.customer_id), self.pool:
                if self.stopping:
                    return False  # the round ended while this waited for a slot: the next one sends it
                outcome = await self.sender.send(endpoint, delivery)
            metrics.webhook_attempt("delivered" if outcome.ok else "failed")
            if outcome.ok:
                await self._record_delivered(delivery.id, attempts, outcome.status_code or 200)
                self._settled(delivery, delivered=True)
                return True
            # 410 Gone is final (Standard Webhooks: stop sending); Retry-After can only delay.
            retry_in = (
                None if outcome.gone else webhooks.retry_delay(attempts, self.schedule, outcome.retry_after_s)
            )
            due = await dispatch.record_failure(
                delivery.id, attempts, outcome.status_code, outcome.error, retry_in
            )
            if outcome.gone:
                await self._disable(delivery.customer_id, endpoint, outcome.error)
            if due is None:
                self._settled(delivery, delivered=False)
                return True
            self.result.retried += 1
            self._park(delivery.order_key, due, delivery.event_seq)
            return False
        finally:
            self.inflight.discard(delivery.id)

    def _record_delivered(self, delivery_id: UUID, attempts: int, status_code: int) -> asyncio.Future:
        """Stores a delivered outcome with the others that come in meanwhile; done once committed."""
        done = self.loop.create_future()
        self.to_record.append((delivery_id, attempts, status_code, done))
        if self.recorder is None:
            self.recorder = asyncio.create_task(self._write_records())
        return done

    async def _write_records(self) -> None:
        batch: list[tuple[UUID, int, int, asyncio.Future]] = []
        try:
            while self.to_record:
                batch, self.to_record = self.to_record, []
                try:
                    await dispatch.record_delivered_many([(i, a, c) for i, a, c, _ in batch])
                except Exception as exc:
                    # The lanes waiting for this write fail, and with them the round.
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for *_, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self.recorder = None
            # Cancelled: whoever still waits is cancelled too (their outcome may not be stored).
            for *_, done in batch + self.to_record:
                if not done.done():
                    done.cancel()
            self.to_record = []

    async def _disable(self, customer_id: UUID, endpoint: webhooks.Endpoint, error: str) -> None:
        """The endpoint answered 410 Gone: disabled, its pending deliveries failed; every lane of
        the customer reads the endpoint afresh, so none posts to it again."""
        if await webhooks.disable_endpoint(customer_id, endpoint.uri, error):
            log.warning("webhook endpoint of customer %s disabled: %s", customer_id, error)
        self.endpoints.pop(customer_id, None)

    def _settled(self, delivery: QueuedDelivery, delivered: bool) -> None:
        self.settled[delivery.id] = self.loop.time()
        if delivered:
            self.result.delivered += 1
        else:
            self.result.failed += 1

    def _customer_slot(self, customer_id: UUID) -> asyncio.Semaphore:
        slot = self.customer_slots.get(customer_id)
        if slot is None:
            slot = self.customer_slots[customer_id] = asyncio.Semaphore(
                self.settings.webhook_customer_concurrency
            )
        return slot

    async def _endpoint(self, customer_id: UUID) -> webhooks.Endpoint | None:
        """The customer's endpoint, read at most once per ENDPOINT_TTL_S by all lanes together."""
        cached = self.endpoints.get(customer_id)
        if cached is None or self.loop.time() - cached[0] > ENDPOINT_TTL_S:
            task = asyncio.create_task(webhooks.endpoints([customer_id]))
            cached = self.endpoints[customer_id] = (self.loop.time(), task)
        elif cached[1].done() and not cached[1].cancelled() and cached[1].exception() is None:
            return cached[1].result().get(customer_id)  # the common case: no shield, no await
        try:
            found = await asyncio.shield(cached[1])
        except Exception:
            self.endpoints.pop(customer_id, None)
            raise
        return found.get(customer_id)
