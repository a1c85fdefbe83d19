"""The floor under the cost per detection: the bench's detections through a pipeline that keeps
the issue's infrastructure and none of the ticket logic, to tell what any design pays on this
machine from what ours adds.

`make bench` (its ingest section) prints it under the cost line. One process, three tasks, each as
lean as it can be while still doing what issue 36 asks of every detection:
- **ingest:** aiokafka reads the topic; each message is decoded (msgspec, two fields); one
  transaction per batch claims each detection id (the dedup, one `INSERT … ON CONFLICT DO NOTHING
  RETURNING` for the batch) and COPYs one audit event per new detection (its raw document as the
  event's data) into a log with a global order and a unique (stream, version); offsets are
  committed after.
- **projector:** each run of new events adds to its tickets' counts, with its checkpoint, in one
  transaction.
- **relay:** each run of new events goes to a topic keyed by stream, in our own record batches,
  and its checkpoint moves once the broker acknowledged them (in the run's transaction too).
Left out, so that the figure is a floor: faust (aiokafka alone reads), grouping (a message key is
a ticket), severity, SLA, ticket numbers, suppression, per-detection read rows, event ids and
metadata beyond the org, the gap-safe read, locks, the message envelope. CPU is this process's and PostgreSQL's, from the first read until every event
is counted and published (the bench's publisher runs before, the broker is listed apart).
"""

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.eventstore import db
from services.outbound.relay import publish_batches
from tests.bench.cpu import CpuMeter

PARTITIONS = 8
Publish = Callable[[str, str, list[tuple[bytes, bytes]]], Awaitable[float]]
_SCHEMA = """
CREATE TABLE floor_events (
    position   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    stream_id  uuid    NOT NULL,
    version    integer NOT NULL,
    type       text    NOT NULL,
    data       jsonb   NOT NULL,
    metadata   jsonb   NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (stream_id, version)
);
CREATE TABLE floor_claims (oid text, detection_id text, PRIMARY KEY (oid, detection_id));
CREATE TABLE floor_tickets (stream_id uuid PRIMARY KEY, detections int NOT NULL);
CREATE TABLE floor_checkpoints (name text PRIMARY KEY, position bigint NOT NULL);
INSERT INTO floor_checkpoints VALUES ('projector', 0), ('relay', 0);
"""


class _Routing(msgspec.Struct):
    oid: str


class _Detection(msgspec.Struct):
    """Both formats' identity: LimaCharlie's `detect_id` and org, ExtraHop's `id` (its org is the
    message key's)."""

    detect_id: str | None = None
    id: int | None = None
    routing: _Routing | None = None


async def _ingest(consumer: AIOKafkaConsumer, pool: db.Pool, total: int) -> None:
    decode = msgspec.json.Decoder(_Detection).decode
    streams: dict[bytes, uuid.UUID] = {}
    versions: dict[uuid.UUID, int] = {}
    metadata: dict[str, str] = {}
    seen = 0
    while seen < total:
        fetched = await consumer.getmany(timeout_ms=100, max_records=2000)
        items = []
        for messages in fetched.values():
            for m in messages:
                d = decode(m.value)
                key: bytes = m.key
                oid = d.routing.oid if d.routing else key.split(b"/", 1)[0].decode()
                items.append((oid, d.detect_id or str(d.id), key, m.value))
            seen += len(messages)
        if not items:
            continue
        async with pool.acquire() as conn, conn.transaction():
            claimed = await conn.fetch(
                "INSERT INTO floor_claims SELECT * FROM unnest($1::text[], $2::text[])"
                " ON CONFLICT DO NOTHING RETURNING oid, detection_id",
                [i[0] for i in items],
                [i[1] for i in items],
            )
            fresh = {(r[0], r[1]) for r in claimed}
            rows = []
            for oid, detection_id, key, value in items:
                if (oid, detection_id) not in fresh:
                    continue
                fresh.discard((oid, detection_id))
                sid = streams.get(key) or streams.setdefault(key, uuid.uuid4())
                version = versions[sid] = versions.get(sid, 0) + 1
                meta = metadata.get(oid) or metadata.setdefault(
                    oid, msgspec.json.encode({"oid": oid}).decode()
                )
                rows.append((sid, version, "detection_added", value.decode(), meta))
            await conn.copy_records_to_table(
                "floor_events", records=rows, columns=("stream_id", "version", "type", "data", "metadata")
            )
        await consumer.commit()


Handle = Callable[[db.Connection, list[asyncpg.Record]], Awaitable[None]]


async def _follow(pool: db.Pool, name: str, columns: str, handle: Handle, done: asyncio.Event) -> None:
    """A reader of the log: each run of new events handled with the checkpoint moved past it, in
    one transaction; returns once `done` is set and nothing is left."""
    while True:
        async with pool.acquire() as conn, conn.transaction():
            at = await conn.fetchval("SELECT position FROM floor_checkpoints WHERE name = $1", name)
            rows = await conn.fetch(
                f"SELECT position, {columns} FROM floor_events WHERE position > $1 ORDER BY position LIMIT 5000",
                at,
            )
            if rows:
                await handle(conn, rows)
                await conn.execute(
                    "UPDATE floor_checkpoints SET position = $2 WHERE name = $1", name, rows[-1][0]
                )
        if not rows:
            if done.is_set():
                return
            await asyncio.sleep(0.02)


async def _count(conn: db.Connection, rows: list[asyncpg.Record]) -> None:
    counts: dict[uuid.UUID, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    await conn.execute(
        "INSERT INTO floor_tickets SELECT * FROM unnest($1::uuid[], $2::int[])"
        " ON CONFLICT (stream_id) DO UPDATE SET detections = floor_tickets.detections + excluded.detections",
        list(counts),
        list(counts.values()),
    )


def _publisher(producer: AIOKafkaProducer, topic: str) -> Handle:
    async def publish(conn: db.Connection, rows: list[asyncpg.Record]) -> None:
        await publish_batches(producer, topic, ((str(r[1]).encode(), r[2].encode()) for r in rows))

    return publish


async def floor_run(
    bootstrap: str, dsn: str, messages: list[tuple[bytes, bytes]], run: str, publish: Publish
) -> tuple[dict[str, float], float]:
    """CPU seconds of this process ("floor"), PostgreSQL and the broker for the messages (published
    first, not counted), and the seconds from the first read until the last event was counted and
    published. `dsn` is an empty database of this run's."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(f"floor{run}.detections", PARTITIONS, 1), NewTopic(f"floor{run}.events", PARTITIONS, 1)
        ])  # fmt: skip
    finally:
        await admin.close()
    await publish(bootstrap, f"floor{run}.detections", messages)
    pool = await asyncpg.create_pool(dsn, min_size=3, max_size=3)
    consumer = AIOKafkaConsumer(
        f"floor{run}.detections", bootstrap_servers=bootstrap, group_id=f"floor{run}",
        enable_auto_commit=False, auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=262144)
    try:
        async with pool.acquire() as conn:
            await conn.execute(_SCHEMA)
        await producer.start()
        await consumer.start()
        meter, started = CpuMeter({"floor": os.getpid()}), time.perf_counter()
        done = asyncio.Event()
        topic = f"floor{run}.events"
        publish_run = _publisher(producer, topic)
        projecting = asyncio.create_task(_follow(pool, "projector", "stream_id", _count, done))
        relaying = asyncio.create_task(_follow(pool, "relay", "stream_id, data::text", publish_run, done))
        await asyncio.wait_for(_ingest(consumer, pool, len(messages)), 600)
        done.set()
        await asyncio.wait_for(asyncio.gather(projecting, relaying), 600)
        spent, elapsed = meter.seconds(), time.perf_counter() - started
        async with pool.acquire() as conn:
            events = await conn.fetchval("SELECT count(*) FROM floor_events")
            counted = await conn.fetchval("SELECT coalesce(sum(detections), 0) FROM floor_tickets")
            claimed = await conn.fetchval("SELECT count(*) FROM floor_claims")
        if not events == counted == claimed:
            raise RuntimeError(f"{events} events, {counted} counted, {claimed} claimed")
        return spent, elapsed
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
