"""The ingest worker's faust parts that skip per-message work still give faust's results: the events
the stream hands over, and the fetches the drain loop hands a batch sink."""

import asyncio
import types
from typing import Any, cast

import faust
import pytest
from aiokafka.structs import ConsumerRecord
from faust.transport.producer import ProducerBuffer
from faust.types import ChannelT
from faust.types.tuples import TP, ConsumerMessage, Message
from mode.utils.queues import ThrowableQueue

from services.ingest.batches import consume_in_batches
from services.ingest.faust_adapter import (
    BytesSchema,
    EagerConsumer,
    SettledBuffer,
    accepted,
    delivered,
    use_transport,
)


def app() -> faust.App:
    a = faust.App("per-message-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    use_transport(a)
    return a


def message(key: bytes | None, value: bytes | None) -> Message:
    return Message("detections", 3, 42, 1.5, 0, [("h", b"v")], key, value, None)


async def test_events_carry_the_brokers_bytes_and_an_empty_value_stays_empty() -> None:
    a = app()
    topic = a.topic("detections", schema=BytesSchema(key_type=bytes, value_type=bytes))
    for key, value in [(b"org/cat/sensor", b'{"not": "decoded"}'), (None, None), (b"k", b"\xff\xfe")]:
        m = message(key, value)
        event = await topic.decode(m)
        assert isinstance(event, faust.Event)
        assert (event.key, event.value, event.message, event.app) == (key, value, m, a)
        assert event.headers == {"h": b"v"}


async def test_the_producer_buffer_counts_what_faust_counts() -> None:
    buffer = app().producer.buffer
    assert isinstance(buffer, SettledBuffer)
    assert buffer.size == ProducerBuffer.size.fget(buffer) == 0  # type: ignore[attr-defined]
    buffer.pending.put_nowait("first")
    buffer.pending.put_nowait("second")
    assert buffer.size == ProducerBuffer.size.fget(buffer) == 2  # type: ignore[attr-defined]


def stream_of(a: faust.App) -> tuple[faust.StreamT[bytes], ThrowableQueue[Any]]:
    stream = a.stream(a.topic("detections", schema=BytesSchema(key_type=bytes, value_type=bytes)))
    a.topics.acking_topics.add("detections")
    a.flow_control.resume()  # what faust does once partitions are assigned
    return stream, cast(ChannelT[bytes], stream.channel).queue


def event(a: faust.App, offset: int, generation: int = 0, partition: int = 0) -> faust.Event:
    m = ConsumerMessage(
        "detections", partition, offset, 1.5, 0, [], b"k", b"v", None, generation_id=generation
    )
    return faust.Event(a, b"k", b"v", {}, m)


async def test_delivered_hands_over_what_is_waiting_at_most_n_at_a_time_tracked_as_unacked() -> None:
    a = app()
    stream, queue = stream_of(a)
    events = [event(a, offset) for offset in range(5)]
    for e in events:
        queue.put_nowait(e)
    batches = delivered(stream, 3)
    assert await anext(batches) == events[:3]
    assert await anext(batches) == events[3:]
    assert all(e.message.tracked for e in events)
    assert set(a.consumer.unacked) == {e.message for e in events}  # commits wait for their acks


async def test_events_fetched_before_a_rebalance_are_dropped() -> None:
    a = app()
    stream, queue = stream_of(a)
    a.consumer_generation_id = 2
    stale, fresh = event(a, 1, generation=1), event(a, 2, generation=2)
    queue.put_nowait(stale)
    queue.put_nowait(fresh)
    batches = delivered(stream, 100)
    assert await anext(batches) == [fresh]

    a.flow_control.suspend()  # a rebalance under way
    queue.put_nowait(event(a, 3, generation=2))
    waiting = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # dropped: nothing to hand over
    a.flow_control.resume()
    after = event(a, 4, generation=2)
    queue.put_nowait(after)
    assert await asyncio.wait_for(waiting, 1) == [after]
    assert set(a.consumer.unacked) == {fresh.message, after.message}


async def test_an_error_thrown_into_the_channel_is_raised() -> None:
    a = app()
    stream, queue = stream_of(a)
    await queue.throw(KeyError("broken"))
    with pytest.raises(KeyError, match="broken"):
        await anext(delivered(stream, 10))


async def test_the_stop_faust_throws_into_the_channel_ends_the_batches_quietly() -> None:
    """On every normal stop the agent 'crashed' with RuntimeError('async generator raised
    StopAsyncIteration'), logged as an error with its traceback."""
    a = app()
    stream, queue = stream_of(a)
    await queue.throw(StopAsyncIteration())
    assert [batch async for batch in delivered(stream, 10)] == []


def fetched(partition: int, offsets: list[int]) -> list[Any]:
    """What aiokafka's fetcher hands faust for a partition: its consumer records."""
    return [
        ConsumerRecord("detections", partition, o, 1500, 0, b"k", f"v{o}".encode(), None, 1, 2, ())
        for o in offsets
    ]


async def drained(a: faust.App, fetches: list[dict[TP, list[Any]]]) -> None:
    """The consumer's drain loop over these fetches (each one `_wait_next_records` result), until
    they are used up."""
    c = cast(EagerConsumer, a.consumer)
    left = list(fetches)

    async def next_records(timeout: float) -> tuple[dict[TP, list[Any]] | None, None]:  # noqa: ASYNC109 (faust's signature)
        if not left:
            c._stopped.set()
            return None, None
        return left.pop(0), None

    c._wait_next_records = next_records  # type: ignore[method-assign]
    c.highwater = lambda tp: 100  # type: ignore[method-assign]
    fetcher = types.SimpleNamespace(_stopped=asyncio.Event())
    await asyncio.wait_for(c._drain_messages(fetcher), 5)


async def test_the_drain_loop_hands_a_partitions_fetch_over_in_one_call_as_faust_would_one_by_one() -> None:
    """The same fetches through faust's own loop (message by message, to the conductor's
    callback) and through this one: the same messages in each partition's order, the same read
    offsets, the same gaps (offsets skipped, which commits pass)."""
    p0, p1 = TP("detections", 0), TP("detections", 1)
    # The second fetch of partition 0 repeats offset 11 (read already: faust takes an offset again
    # only from the last read one on) and skips 12-13 (a gap).
    fetches = [{p0: fetched(0, [10, 11]), p1: fetched(1, [5])}, {p0: fetched(0, [9, 11, 14])}]
    ours, theirs = app(), app()
    stream_of(ours)
    stream_of(theirs)
    calls: list[list[tuple[int, int]]] = []
    one_by_one: list[tuple[int, int]] = []

    async def sink(messages: list[Message]) -> None:
        calls.append([(m.partition, m.offset) for m in messages])

    async def callback(message: Message) -> None:
        one_by_one.append((message.partition, message.offset))

    c, faust_own = cast(EagerConsumer, ours.consumer), cast(EagerConsumer, theirs.consumer)
    c.batch_sinks["detections"] = sink
    faust_own.callback = callback  # no sinks: faust's loop
    await drained(ours, fetches)
    await drained(theirs, [dict(f) for f in fetches])
    assert calls == [[(0, 10), (0, 11)], [(1, 5)], [(0, 11), (0, 14)]]
    for p in (0, 1):
        assert [o for batch in calls for q, o in batch if q == p] == [o for q, o in one_by_one if q == p]
    for tp in (p0, p1):
        assert c._read_offset[tp] == faust_own._read_offset[tp]
        assert sorted(c._gap[tp]) == sorted(faust_own._gap[tp])
    assert sorted(c._gap[p0])  # the skipped offsets are there


async def test_a_topic_without_a_sink_goes_message_by_message_through_faust() -> None:
    a = app()
    stream_of(a)
    c = cast(EagerConsumer, a.consumer)
    c.batch_sinks["elsewhere"] = lambda messages: asyncio.sleep(0)
    delivered_one_by_one: list[int] = []

    async def callback(message: Message) -> None:
        delivered_one_by_one.append(message.offset)

    c.callback = callback
    await drained(a, [{TP("detections", 0): fetched(0, [1, 2, 3])}])
    assert delivered_one_by_one == [1, 2, 3]


async def test_a_sink_takes_messages_as_delivered_takes_events() -> None:
    """Held and tracked as unacked; none fetched before the latest rebalance or while it is under way."""
    a = app()
    stream_of(a)
    a.consumer_generation_id = 2
    fresh = [event(a, o, generation=2).message for o in (1, 2)]
    assert accepted(a, fresh) == fresh
    assert all(m.tracked and m.refcount == 1 for m in fresh)
    assert set(a.consumer.unacked) == set(fresh)
    assert accepted(a, [event(a, 3, generation=1).message]) == []
    a.flow_control.suspend()
    late = event(a, 4, generation=2).message
    assert accepted(a, [late]) == [] and not late.tracked
    assert set(a.consumer.unacked) == set(fresh)
    fresh[0].ack(a.consumer)
    assert fresh[0].acked and set(a.consumer.unacked) == {fresh[1]}


async def test_a_sink_abandoned_while_its_lane_is_full_takes_nothing() -> None:
    """A rebalance suspends the flow while the drain loop waits for room: the fetch is left
    untracked, for whoever owns the partition next."""
    a = app()
    stream, _ = stream_of(a)
    c = cast(EagerConsumer, a.consumer)
    gate = asyncio.get_running_loop().create_future()
    written: list[int] = []

    async def write(batch: list[Message]) -> None:
        written.extend(m.offset for m in batch)
        await gate

    running = asyncio.create_task(consume_in_batches(stream, size=2, within_s=0, write=write))
    await asyncio.sleep(0.01)
    sink = c.batch_sinks["detections"]
    first = [event(a, o).message for o in (0, 1)]
    await sink(first)  # taken by the writer, which is now in its (slow) write
    await asyncio.sleep(0.01)
    await sink([event(a, o).message for o in (2, 3)])  # waits in the lane: the next batch
    third = [event(a, o).message for o in (4, 5)]
    waiting = asyncio.create_task(c.wait_first(sink(third), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # no room: a whole batch is waiting
    c.suspend_flow.set()
    await asyncio.wait_for(waiting, 1)
    assert not any(m.tracked for m in third) and not set(third) & set(c.unacked)
    gate.set_result(None)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if len(written) == 4:
            break
    assert written == [0, 1, 2, 3]
    assert all(m.acked for m in first)
    running.cancel()
