"""A faust Kafka transport whose consumer hands each message to the streams without a task.

faust's drain loop delivers every fetched message with
`wait_first(callback(message), suspend_flow.wait())`: four tasks and an `asyncio.wait` per
message, so that a delivery blocked on a full stream buffer can be abandoned when a rebalance
suspends the flow. That bookkeeping was most of faust's cost here (a count-only agent: 6.7k
messages/s; with this consumer 16k). Almost every delivery completes without blocking, so the
callback's first step runs at once, as Python 3.12's eager tasks do; only a delivery that really
has to wait (full buffer, flow suspended, a lock held) becomes a task and goes through faust's
own `wait_first`, with the same outcome as before.
"""

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from services.ingest.per_message import SettledProducer


class _Started:
    """The rest of a coroutine whose first step has already run and yielded `pending`."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, None, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                yield pending  # the driving task waits on it, exactly as for the coroutine itself
            except BaseException as exc:  # cancellation and the like go into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(None)
                except StopIteration as stop:
                    return stop.value


class EagerConsumer(faust_aiokafka.Consumer):
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 (mode's signature)
        first = coros[0]
        if (
            not asyncio.iscoroutine(first)
            or self.suspend_flow.is_set()
            or self.should_stop
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as stop:
            _close(coros[1:])
            return WaitResults([first], [stop.value], False)
        except BaseException:
            _close(coros[1:])
            raise
        return await super().wait_first(_Started(first, pending), *coros[1:], timeout=timeout)


class EagerTransport(faust_aiokafka.Transport):
    Consumer = EagerConsumer
    Producer = SettledProducer


def _close(coros: tuple[Any, ...]) -> None:
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: closing avoids the "never awaited" warning


def use_eager_transport(app: faust.App) -> None:
    """Must run before anything touches `app.transport` (declaring a topic does)."""
    app.transport = EagerTransport(app.conf.broker_consumer, app)
