"""Log shards (issue 36) on a real database: an org's events go to its shard; appends to different
shards take different locks; a reader of every shard sees each event once, and each ticket's in
order, under writers that commit out of order across shards, and so does ticket-events; a reshard
waits for the readers, and appends after it land in the new shards."""

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime

import pytest

from domain.events import NoteAdded, encode_event
from domain.placement import shard_of  # the rule as migration 0036 states it, in Python
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.layout import SubscribersBehind, reshard
from services.eventstore.subscription import catch_up, checkpoint
from services.kafka.topics import ensure_topics
from services.outbound.relay import RELAY_NAME, Relay, make_producer
from services.settings import Settings
from tests.integration.test_relay import consume_all


def orgs_in_shards(shards: int, each: int = 1) -> list[list[str]]:
    found: list[list[str]] = [[] for _ in range(shards)]
    n = 0
    while any(len(f) < each for f in found):
        oid = f"org-{n}"
        if len(found[shard_of(oid, shards)]) < each:
            found[shard_of(oid, shards)].append(oid)
        n += 1
    return found


def note(oid: str, n: int, ticket_number: int = 1) -> store.NewEvent:
    event = NoteAdded(datetime.now(UTC), uuid.uuid4(), f"{n:05d}", "general")
    return store.NewEvent(
        uuid.uuid4(), "note_added", encode_event(event), {"oid": oid, "ticket_number": ticket_number}
    )


async def test_the_shard_rule_is_the_documented_one_and_spreads_orgs(pool: db.Pool) -> None:
    oids = [f"org-{uuid.uuid4().hex[:12]}" for _ in range(2000)]
    async with pool.acquire() as conn:
        got = await conn.fetch("SELECT o, ticketing_shard_of(o, 8) FROM unnest($1::text[]) AS o", oids)
        assert await conn.fetchval("SELECT ticketing_shard_of(NULL, 8)") == 0
        assert await conn.fetchval("SELECT ticketing_shard_of('anything', 1)") == 0
    assert {r[0]: r[1] for r in got} == {o: shard_of(o, 8) for o in oids}
    per_shard = [sum(1 for r in got if r[1] == s) for s in range(8)]
    assert min(per_shard) > 2000 / 8 * 0.7  # spread, none left empty


async def test_an_orgs_events_go_to_its_shard_and_other_shards_do_not_wait(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await reshard(conn, 4)
    [[a, a2], [b, _], *_] = orgs_in_shards(4, each=2)
    holder = await pool.acquire()
    try:
        tx = holder.transaction()
        await tx.start()
        await store.append(holder, [store.StreamAppend(uuid.uuid4(), 0, [note(a, 1)])])  # shard of a, held

        async def append(oid: str) -> None:
            async with pool.acquire() as conn, conn.transaction():
                await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(oid, 2)])])

        await asyncio.wait_for(append(b), 5)  # another shard: not held up
        same = asyncio.create_task(append(a2))  # a's shard: waits for the holder
        await asyncio.sleep(0.5)
        assert not same.done()
        await tx.commit()
        await asyncio.wait_for(same, 5)
    finally:
        await pool.release(holder)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT metadata->>'oid', shard FROM events WHERE metadata->>'oid' = ANY($1)", [a, a2, b]
        )
    assert sorted((o, s) for o, s in rows) == sorted(
        [(a, shard_of(a, 4)), (a2, shard_of(a2, 4)), (b, shard_of(b, 4))]
    )
    assert shard_of(a, 4) == shard_of(a2, 4) == 0 and shard_of(b, 4) == 1


async def test_readers_of_every_shard_and_ticket_events_keep_each_tickets_order_under_concurrent_writers(
    pool: db.Pool, settings: Settings
) -> None:
    """Writers commit out of order (random sleeps holding their locks), some appends span two
    shards; a subscriber following every shard meanwhile handles each event once, each ticket's
    in version order; the relay puts each ticket's events on ticket-events in order."""
    shards = 4
    async with pool.acquire() as conn:
        await reshard(conn, shards)
    orgs = [o for group in orgs_in_shards(shards, each=2) for o in group]
    done, handled = asyncio.Event(), list[store.RecordedEvent]()
    versions: dict[uuid.UUID, int] = {}

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        mine: dict[uuid.UUID, str] = {}
        for _ in range(25):
            streams = rng.sample([*mine, uuid.uuid4(), uuid.uuid4()], k=rng.randint(1, 2))
            appends = []
            for sid in streams:
                oid = mine.setdefault(sid, rng.choice(orgs))
                count = rng.randint(1, 3)
                base = versions.get(sid, 0)
                appends.append(store.StreamAppend(sid, base, [note(oid, base + k + 1) for k in range(count)]))
                versions[sid] = base + count
            async with pool.acquire() as conn, conn.transaction():
                await asyncio.sleep(rng.random() * 0.003)
                await store.append(conn, appends)
                await asyncio.sleep(rng.random() * 0.003)  # commit late, holding low positions

    async def handle(conn: db.Connection, events: list[store.RecordedEvent]) -> None:
        handled.extend(events)

    async def reader() -> None:
        while not done.is_set():
            await catch_up(pool, "every-shard", handle, limit=7)
            await asyncio.sleep(0.002)
        await catch_up(pool, "every-shard", handle, limit=7)

    read = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(6)))  # (each writer owns its streams)
    done.set()
    await read

    async with pool.acquire() as conn:
        committed = await conn.fetch(
            "SELECT event_id, stream_id, version, shard FROM events ORDER BY position"
        )
        heads = await conn.fetch("SELECT shard, max(position) FROM events GROUP BY shard")
        for shard, head in heads:
            assert await checkpoint(conn, "every-shard", shard) == head
    assert len({r[3] for r in committed}) == shards  # every shard was written
    assert sorted(e.event_id for e in handled) == sorted(r[0] for r in committed)  # each once
    per_stream: dict[uuid.UUID, list[int]] = {}
    for e in handled:
        per_stream.setdefault(e.stream_id, []).append(e.version)
    assert all(v == list(range(1, len(v) + 1)) for v in per_stream.values())  # each ticket in order

    # ticket-events: the relay, following every shard, keeps each ticket's order on its partition
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        assert await catch_up(
            pool, RELAY_NAME, Relay(producer, settings.topics.ticket_events).publish, limit=50
        ) == len(committed)
    finally:
        await producer.stop()
    published: dict[str, list[int]] = {}
    for m in await consume_all(settings, settings.topics.ticket_events, len(committed)):
        value = json.loads(m.value)
        published.setdefault(value["ticket_id"], []).append(int(value["metadata"]["content"]))
    assert {uuid.UUID(k): v for k, v in published.items()} == {
        sid: list(range(1, n + 1)) for sid, n in versions.items()
    }


async def test_a_reshard_waits_for_the_readers_and_later_appends_use_the_new_shards(pool: db.Pool) -> None:
    [[a], [b], *_] = orgs_in_shards(4)
    async with pool.acquire() as conn:
        await reshard(conn, 1)  # (the suite may run on a sharded log: TICKETING_LOG_SHARDS)
        async with conn.transaction():
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(a, 1), note(a, 2)])])
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(b, 1)])])
        seen: list[store.RecordedEvent] = []

        async def handle(c: db.Connection, events: list[store.RecordedEvent]) -> None:
            seen.extend(events)

        await catch_up(pool, "slow", handle, limit=1)
        async with conn.transaction():  # one more, which "slow" has not read
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(b, 1)])])
        with pytest.raises(SubscribersBehind, match="slow"):
            await reshard(conn, 4, wait_s=0.5)
        assert await store.shard_count(conn) == 1  # nothing changed
        await catch_up(pool, "slow", handle)
        head = await store.head_position(conn)
        assert await reshard(conn, 4, wait_s=5) == 1 and await store.shard_count(conn) == 4
        assert [await checkpoint(conn, "slow", s) for s in range(4)] == [head] * 4
        async with conn.transaction():
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(a, 3)])])
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [note(b, 3)])])
        shards = {
            r[0]: r[1]
            for r in await conn.fetch("SELECT metadata->>'oid', shard FROM events WHERE position > $1", head)
        }
        assert shards == {a: 0, b: 1}
    seen.clear()
    await catch_up(pool, "slow", handle)
    assert sorted(json.loads(e.data)["content"] for e in seen) == ["00003", "00003"]  # the new ones, once
    with pytest.raises(ValueError, match="1 to 256"):
        async with pool.acquire() as conn:
            await reshard(conn, 0)
