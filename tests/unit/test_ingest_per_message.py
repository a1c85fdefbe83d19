"""The ingest worker's faust parts that skip per-message work still give faust's results."""

import faust
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import Message

from services.ingest.consumer import use_eager_transport
from services.ingest.per_message import BytesSchema, SettledBuffer


def app() -> faust.App:
    a = faust.App("per-message-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    use_eager_transport(a)
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
