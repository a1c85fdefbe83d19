"""The ingest worker's faust parts that skip per-message work still give faust's results."""

import asyncio
from typing import Any, cast

import faust
import pytest
from faust.transport.producer import ProducerBuffer
from faust.types import ChannelT
from faust.types.tuples import ConsumerMessage, Message
from mode.utils.queues import ThrowableQueue

from services.ingest.faust_adapter import BytesSchema, SettledBuffer, delivered, use_transport


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
