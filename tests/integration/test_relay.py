import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer

from domain.events import NoteAdded, encode_event
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from services.kafka.topics import ensure_topics
from services.outbound.relay import RELAY_NAME, Relay, make_producer
from services.settings import Settings
from tests.integration.support import seed
from tests.unit.test_relay_message import merged


async def consume_all(settings: Settings, topic: str, expected: int, wait_s: float = 20) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=f"check-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka.session_timeout_ms,
        heartbeat_interval_ms=settings.kafka.heartbeat_interval_ms,
    )
    await consumer.start()
    out: list[Any] = []
    try:
        deadline = asyncio.get_running_loop().time() + wait_s
        while len(out) < expected and asyncio.get_running_loop().time() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(msgs)
        # a little longer, to see anything beyond what was expected
        for msgs in (await consumer.getmany(timeout_ms=500)).values():
            out.extend(msgs)
    finally:
        await consumer.stop()
    return out


async def test_relay_publishes_each_event_once_per_run_and_resumes(pool: db.Pool, settings: Settings) -> None:
    await ensure_topics(settings)
    await seed(pool, 20)
    producer = make_producer(settings)
    await producer.start()
    try:
        relay = Relay(producer, settings.topics.ticket_events)
        assert await catch_up(pool, RELAY_NAME, relay.publish, limit=6) == 20
        await seed(pool, 25)  # 20 duplicates (no events) + 5 new
        # a new relay instance resumes from the stored checkpoint
        relay2 = Relay(producer, settings.topics.ticket_events)
        assert await catch_up(pool, RELAY_NAME, relay2.publish) == 5
    finally:
        await producer.stop()
    messages = await consume_all(settings, settings.topics.ticket_events, 25)
    values = [json.loads(m.value) for m in messages]
    assert len(values) == 25
    assert len({v["event_id"] for v in values}) == 25
    for m, v in zip(messages, values, strict=True):
        assert m.key == v["ticket_id"].encode()
        assert v["action"] == "created" and v["oid"] == "org-x" and v["by"] == "system:ingest"
    assert sorted(v["ticket_number"] for v in values) == list(range(1, 26))


async def test_a_merge_larger_than_a_message_is_published_cut_and_the_relay_goes_on(
    pool: db.Pool, settings: Settings
) -> None:
    """Before, the producer refused the 2 MB message and the relay stopped at that event for good."""
    await ensure_topics(settings)
    big = merged(6000)
    async with pool.acquire() as conn, conn.transaction():
        new = store.NewEvent(big.event_id, big.type, big.data.encode(), big.metadata)
        await store.append(conn, [store.StreamAppend(big.stream_id, 0, [new])])
    await seed(pool, 2)  # and what comes after it
    producer = make_producer(settings)
    await producer.start()
    try:
        assert await catch_up(pool, RELAY_NAME, Relay(producer, settings.topics.ticket_events).publish) == 3
    finally:
        await producer.stop()
    values = [json.loads(m.value) for m in await consume_all(settings, settings.topics.ticket_events, 3)]
    assert [v["action"] for v in values].count("created") == 2
    [merge] = [v for v in values if v["action"] == "merged_from"]
    assert merge["metadata"]["detections_total"] == 6000 and merge["metadata"]["detections_truncated"]


async def test_a_tickets_events_stay_in_order_across_the_record_batches_of_one_publish(
    pool: db.Pool, settings: Settings
) -> None:
    """The relay builds its own record batches, one run per partition: a ticket with more events
    than one batch holds (256 KiB) still has them on its partition in version order, once each."""
    await ensure_topics(settings)
    streams = [uuid.uuid4() for _ in range(3)]
    ts = datetime.now(UTC)
    for first in range(0, 150, 50):  # several appends, the streams interleaved in the log
        async with pool.acquire() as conn, conn.transaction():
            await store.append(
                conn,
                [
                    store.StreamAppend(
                        sid,
                        first,
                        [
                            store.NewEvent(
                                uuid.uuid4(),
                                "note_added",
                                encode_event(
                                    NoteAdded(ts, uuid.uuid4(), f"{first + i:04d} " + "x" * 2000, "general")
                                ),
                                {"actor": "a@x", "oid": "org-order", "ticket_number": n + 1},
                            )
                            for i in range(50)
                        ],
                    )
                    for n, sid in enumerate(streams)
                ],
            )
    producer = make_producer(settings)
    await producer.start()
    try:
        assert await catch_up(pool, RELAY_NAME, Relay(producer, settings.topics.ticket_events).publish) >= 450
    finally:
        await producer.stop()
    got: dict[bytes, list[int]] = {}
    for m in await consume_all(settings, settings.topics.ticket_events, 450):
        if m.key in {str(s).encode() for s in streams}:
            got.setdefault(m.key, []).append(int(json.loads(m.value)["metadata"]["content"][:4]))
    assert {k: v for k, v in got.items()} == {str(s).encode(): list(range(150)) for s in streams}
