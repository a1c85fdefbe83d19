"""Group commit for the ingest worker: events gather while the previous batch is being written.

faust's `take_events` stops taking events while its caller works on a batch and then waits up to
`within` for the next one, so fetching and writing took turns. Here the stream keeps filling the
next batch (up to `size`, then it waits) while the writer commits the current one; a batch goes
to the writer as soon as the writer is free. When nothing is waiting, the first event lingers up
to `within` so that a trickle still forms batches.
"""

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import faust
from faust.types.tuples import Message

from services.ingest.faust_adapter import accepted, delivered, take_batches

log = logging.getLogger(__name__)
T = TypeVar("T")


class Batches(Generic[T]):
    def __init__(self, size: int, within_s: float) -> None:
        self._size, self._within = size, within_s
        self._items: list[T] = []
        self._arrived = asyncio.Event()
        self._taken = asyncio.Event()

    async def put(self, item: T) -> None:
        """Add an item; waits while a whole batch is already waiting for the writer."""
        await self.room()
        self.extend([item])

    async def room(self) -> None:
        """Return once there is room: while a whole batch is already waiting for the writer, wait."""
        while len(self._items) >= self._size:
            self._taken.clear()
            await self._taken.wait()

    def extend(self, items: list[T]) -> None:
        """Add items at once (a partition's fetch may overfill a batch; the writer takes `size`)."""
        was = len(self._items)
        self._items.extend(items)
        if (was == 0 and self._items) or len(self._items) >= self._size:
            self._arrived.set()

    async def take(self) -> list[T]:
        """The next batch: what has gathered, or once something arrives, what gathers within
        `within` seconds (or until the batch is full)."""
        if not self._items:
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._within
            while len(self._items) < self._size and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
        batch, self._items = self._items[: self._size], self._items[self._size :]
        self._taken.set()
        return batch


async def consume_in_batches(
    stream: faust.StreamT[Any],
    size: int,
    within_s: float,
    write: Callable[[list[Message]], Awaitable[None]],
    writers: int = 1,
) -> None:
    """Hand the stream's messages to `write` in batches; each is acknowledged only after `write`
    returned for its batch (acks are manual on this stream).

    Messages come a partition's fetch at a time from the consumer's drain loop (`take_batches`),
    not one faust event each through the conductor and the stream: that was most of faust's cost
    per message (docs/benchmarks.md). Anything the stream still delivers (a consumer not this
    adapter's) goes the same way, taken from its events.

    With several writers, each partition belongs to one of them, so a partition's messages are
    written one batch at a time, in order (grouping and dedup depend on it), while another
    writer's batch is in the database: with one writer the worker sat idle whenever its batch was
    in PostgreSQL. Writers contend
    only where their transactions meet (advisory locks per group key, the per-org ticket-number
    row), which is what already keeps two workers correct. faust commits an offset only once every
    offset before it in its partition is acked, whichever writer finishes first.
    """
    assert isinstance(stream, faust.Stream)  # noack is not declared on StreamT
    manual = stream.noack()
    app = stream.app
    lanes: list[Batches[Message]] = [Batches(size, within_s) for _ in range(writers)]

    async def writer(batches: Batches[Message]) -> None:
        while True:
            messages = await batches.take()
            await write(messages)
            consumer = app.consumer
            for message in messages:
                message.ack(consumer)

    async def sink(messages: list[Message]) -> None:
        # Nothing is taken before the last wait: a sink abandoned there (a rebalance suspended
        # the flow) leaves its messages untracked, for the partition's next owner.
        lane = lanes[messages[0].partition % writers]
        await lane.room()
        lane.extend(accepted(app, messages))

    tasks = [asyncio.create_task(writer(lane)) for lane in lanes]
    for task in tasks:
        task.add_done_callback(_writer_ended)
    take_batches(manual, sink)
    try:
        async for events in delivered(manual, size):
            for event in events:
                await lanes[event.message.partition % writers].put(event.message)
    finally:
        for task in tasks:
            task.cancel()


def _writer_ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled():  # it only ends by cancellation: anything else would stall the stream
        log.critical("ingest: the batch writer stopped", exc_info=task.exception())
        logging.shutdown()
        os._exit(70)
