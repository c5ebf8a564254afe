"""Group commit: concurrent writes of one kind coalesced into one statement and one commit.

A caller `submit`s its item and waits for its own result. While a batch is being written, the
items that arrive wait; when it is done, everything waiting (up to `max_batch`) goes in the next
one. So an idle process writes each item at once, alone (no timer, no added latency), and a busy
one writes several per commit. Each caller's answer comes after the commit of its own item.

A batch that fails (a deadlock, a dropped connection, one bad item) has changed nothing (it is
one statement); its items are then written one by one, so one item's error reaches only its own
caller, and the others are stored as they would have been alone."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger("hub.group_commit")

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        write_one: Callable[[Item], Awaitable[Result]],
        write_many: Callable[[list[Item]], Awaitable[list[Result]]],
        max_batch: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._write_one = write_one
        self._write_many = write_many
        self.max_batch = max(1, max_batch)
        self._on_batch = on_batch
        self._waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()
        self._waiting.append((item, future))
        if self._writer is None:
            # A context of its own: the writer is no caller's (their request ids, transactions).
            self._writer = loop.create_task(self._write_waiting(), context=contextvars.Context())
            self._writer.add_done_callback(self._writer_gone)
        return await future

    def _writer_gone(self, task: asyncio.Task[None]) -> None:
        """A writer cancelled before it ran (its `finally` never did): its callers are not left
        waiting. After any other end the writer has already let go (`_writer` is not it)."""
        if self._writer is task:
            self._writer = None
            for _, future in self._waiting:
                future.cancel()
            self._waiting = []

    async def _write_waiting(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self._waiting:
                taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                # A caller that gave up (its request cancelled) before its batch: not written.
                batch = [(item, future) for item, future in taken if not future.done()]
                if batch:
                    await self._write(batch)
        finally:
            self._writer = None
            # Only when this task itself was cancelled (the loop shutting down): nobody is left
            # waiting forever.
            for _, future in [*batch, *self._waiting]:
                if not future.done():
                    future.cancel()
            self._waiting = []

    async def _write(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        if len(batch) > 1:
            try:
                results = await self._write_many([item for item, _ in batch])
            except Exception as exc:
                log.warning(
                    "a group commit of %d items failed (%s: %s); writing them one by one",
                    len(batch),
                    type(exc).__name__,
                    exc,
                )
            else:
                for (_, future), result in zip(batch, results, strict=True):
                    _settle(future, result)
                return
        for item, future in batch:
            try:
                result = await self._write_one(item)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)
