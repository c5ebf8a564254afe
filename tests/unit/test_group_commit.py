"""hub.group_commit: what arrives while a batch is written goes in the next one; each caller gets
its own item's result; a failed batch is written item by item."""

from __future__ import annotations

import asyncio

import pytest

from hub.group_commit import GroupCommit


class Store:
    """Writes to a list; a batch is all-or-nothing, like one statement."""

    def __init__(self, bad: set[int] | None = None) -> None:
        self.rows: list[int] = []
        self.batches: list[list[int]] = []
        self.bad = bad or set()
        self.gate = asyncio.Event()
        self.gate.set()

    async def one(self, item: int) -> str:
        await self.gate.wait()
        if item in self.bad:
            raise ValueError(f"bad item {item}")
        self.rows.append(item)
        return f"one:{item}"

    async def many(self, items: list[int]) -> list[str]:
        self.batches.append(list(items))
        await self.gate.wait()
        if self.bad & set(items):
            raise ValueError("the batch has a bad item")
        self.rows.extend(items)
        return [f"many:{item}" for item in items]


async def test_an_idle_writer_writes_at_once_alone_and_a_busy_one_coalesces():
    store = Store()
    sizes: list[int] = []
    group = GroupCommit(store.one, store.many, max_batch=64, on_batch=sizes.append)
    assert await group.submit(1) == "one:1"
    store.gate.clear()  # the next write takes a while: the others wait for it
    first = asyncio.ensure_future(group.submit(2))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(group.submit(i)) for i in range(3, 13)]
    await asyncio.sleep(0)
    store.gate.set()
    assert await first == "one:2"
    assert await asyncio.gather(*rest) == [f"many:{i}" for i in range(3, 13)]
    assert store.batches == [list(range(3, 13))]
    assert store.rows == list(range(1, 13))
    assert sizes == [1, 1, 10]


async def test_batches_hold_at_most_max_batch_items_in_arrival_order():
    store = Store()
    group = GroupCommit(store.one, store.many, max_batch=4)
    store.gate.clear()
    calls = [asyncio.ensure_future(group.submit(i)) for i in range(11)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*calls)
    # All eleven were waiting when the writer started: in fours, in order.
    assert store.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert store.rows == list(range(11))


async def test_a_failed_batch_is_written_item_by_item_and_only_the_bad_caller_fails():
    store = Store(bad={5})
    group = GroupCommit(store.one, store.many)
    store.gate.clear()
    calls = [asyncio.ensure_future(group.submit(i)) for i in range(8)]
    await asyncio.sleep(0)
    store.gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[5], ValueError)
    assert [r for i, r in enumerate(results) if i != 5] == [
        "one:0",
        "one:1",
        "one:2",
        "one:3",
        "one:4",
        "one:6",
        "one:7",
    ]
    assert store.rows == [0, 1, 2, 3, 4, 6, 7]  # nothing of the failed batch, each good one once


async def test_a_caller_that_gave_up_before_its_batch_is_not_written():
    store = Store()
    group = GroupCommit(store.one, store.many)
    store.gate.clear()
    first = asyncio.ensure_future(group.submit(1))
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(group.submit(2))
    kept = asyncio.ensure_future(group.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    assert await first == "one:1"
    assert await kept == "one:3"
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert store.rows == [1, 3]


@pytest.mark.parametrize("started", [False, True])
async def test_a_writer_cancelled_leaves_nobody_waiting(started):
    store = Store()
    group = GroupCommit(store.one, store.many)
    store.gate.clear()
    calls = [asyncio.ensure_future(group.submit(i)) for i in range(3)]
    await asyncio.sleep(0)  # the callers are waiting; the writer has not run yet
    if started:
        await asyncio.sleep(0)
        assert store.batches == [[0, 1, 2]]
    group._writer.cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert group._writer is None
    store.gate.set()
    assert await group.submit(9) == "one:9"  # a new writer for the next caller
