"""What faust does for every message that this worker has no use for, made to cost nothing.

The worker's event loop is its bottleneck. Per message faust decodes key and value through its
codec registry (the raw serializer returns the bytes it was given), counts it for a web view this
worker does not serve, reads settings that `app.conf` tracks on every read, and walks its own
per-event iterator. None of it is needed here; what each cost is in docs/benchmarks.md.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import AppT, ChannelT, EventT, StreamT
from faust.types.tuples import TP, Message
from mode.threads import ServiceThread


class BytesSchema(faust.Schema[bytes, bytes]):
    """Keys and values stay the bytes the broker delivered: the batch parses them (and dead-letters
    what it cannot read), so there is nothing to decode here."""

    def compile(self, app: AppT, **kwargs: Any) -> Any:
        event_class: Any = app.conf.Event  # read once: faust's decode asks for it per message

        async def decode(message: Message, *, propagate: bool = False) -> EventT[bytes]:
            return cast(EventT[bytes], event_class(app, message.key, message.value, message.headers, message))

        return decode


class UncountedMonitor(Monitor):
    """faust's Monitor without its per-message counters and timings (rebalances, commits and sends
    are still recorded); they feed only faust's web view."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]) -> None:
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[Any, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None


class SettledBuffer(ProducerBuffer):
    """faust's producer buffer, whose size (asked before every delivered message) tells threaded
    from not by the threaded producer its producer attached (only when `producer_threaded` is
    set), not by a settings lookup each time."""

    threaded_producer: ServiceThread | None = None  # faust assigns one on the instance when the setting is on

    @property
    def size(self) -> int:
        if self.threaded_producer is not None:
            return len(self.queue._queue) if self.queue else 0  # type: ignore[attr-defined]
        pending: asyncio.Queue[Any] = self.pending
        return len(pending._queue)  # type: ignore[attr-defined]


class SettledProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer with a `SettledBuffer` (its __init__ names the buffer class, so
    the buffer it built becomes one before anything uses it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer.__class__ = SettledBuffer


async def delivered(stream: StreamT[Any], most: int) -> AsyncIterator[list[EventT[Any]]]:
    """The events delivered to a stream whose acks are manual, up to `most` at a time, taken from
    its channel's queue in one go.

    faust's stream iterator spends an event-loop turn (`await sleep(0)`) and two async-generator
    hops on every event. This keeps what that iterator does for a manual-ack stream with no
    processors: it drops events fetched before the latest rebalance (the flow suspended, or an
    older consumer generation: their partitions may now be another worker's, and their offsets
    will be fetched again), it marks each message as unacked so that commits and rebalances wait
    for it, errors thrown into the channel are raised here, and the queue's own `get` still signals
    the fetcher when the buffer drains. It drops the per-event sensor calls and `current_event`,
    which this worker does not use.
    """
    app, queue = stream.app, cast(ChannelT[Any], stream.channel).queue
    acking, unacked, flow = app.topics.acking_topics, app.consumer.unacked, app.flow_control
    started = await stream.maybe_start()
    try:
        while not stream.should_stop:
            try:
                taken = [await queue.get()]
            except StopAsyncIteration:  # faust ends the channel so on stop: the stream is over
                return
            while len(taken) < most and not queue.empty():
                taken.append(queue.get_nowait())
            events = []
            for event in taken:
                message = event.message
                if not flow.is_active() or message.generation_id != app.consumer_generation_id:
                    continue
                if message.topic in acking and not message.tracked:
                    message.tracked = True
                    unacked.add(message)
                events.append(event)
            if events:
                yield events
    finally:
        if started:
            await stream.stop()
