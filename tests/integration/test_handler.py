import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest

from domain.commands import CountDuplicates, LinkDetection, OpenTicket
from domain.detections import Detection
from domain.errors import ConcurrencyError, DetectionAlreadyLinked
from services.bootstrap import make_handler
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler
from services.commands.indexes import allocate_ticket_numbers
from services.eventstore import db
from services.eventstore import postgres as store

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CTX = CommandContext(actor="alice@example.com", correlation_id="corr")


def detection(i: str, oid: str = "org") -> Detection:
    return Detection(
        detection_id=i, oid=oid, detection_cat="c", detection_source="s", detection_priority=3,
        sensor_id="s1", hostname="h", detected_at=NOW, source_format="limacharlie",
    )  # fmt: skip


async def test_ticket_numbers_are_unique_and_gapless_under_concurrency(pool: db.Pool) -> None:
    async def take(n: int) -> list[int]:
        async with pool.acquire() as conn, conn.transaction():
            got = await allocate_ticket_numbers(conn, Counter({"org": n, "other": 1}))
            await asyncio.sleep(0.001)
            return got["org"]

    results = await asyncio.gather(*(take(1 + i % 3) for i in range(30)))
    numbers = [n for r in results for n in r]
    assert sorted(numbers) == list(range(1, len(numbers) + 1))
    for r in results:
        assert r == list(range(r[0], r[0] + len(r)))  # each caller gets a consecutive run


async def test_writers_numbering_overlapping_orgs_neither_deadlock_nor_leave_gaps(pool: db.Pool) -> None:
    """Each takes its orgs' rows in one statement, in one order for all: 24 writers, each opening
    tickets in a different mix of 40 orgs (given in an order that is not the sorted one),
    hold them together for a while and all commit."""
    orgs = [f"org-{(i * 7) % 40:02d}" for i in range(40)]

    async def take(i: int) -> dict[str, list[int]]:
        mix = Counter({oid: 1 + (i + j) % 3 for j, oid in enumerate(orgs[i % 5 :: 1 + i % 4])})
        async with pool.acquire() as conn, conn.transaction():
            got = await allocate_ticket_numbers(conn, mix)
            await asyncio.sleep(0.002)
        assert {oid: len(n) for oid, n in got.items()} == dict(mix)
        return got

    results = await asyncio.gather(*(take(i) for i in range(24)))
    for oid in orgs:
        numbers = sorted(n for r in results for n in r.get(oid, []))
        assert numbers == list(range(1, len(numbers) + 1)), oid


async def test_rolled_back_numbers_are_not_consumed_and_never_reused(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        async with conn.transaction():
            assert (await allocate_ticket_numbers(conn, Counter({"o": 2})))["o"] == [1, 2]
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await allocate_ticket_numbers(conn, Counter({"o": 1}))
                raise RuntimeError("abort")
        async with conn.transaction():
            assert (await allocate_ticket_numbers(conn, Counter({"o": 1})))["o"] == [3]


async def test_handler_appends_with_metadata_and_indexes(pool: db.Pool) -> None:
    handler = make_handler(lambda: NOW)
    tid = uuid.uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            outcome = await handler.execute(
                conn, [(OpenTicket(tid, "org", 1, "medium", detection("d1")), CTX)]
            )
        assert outcome.states[tid].ticket_number == 1
        assert [type(e).__name__ for e in outcome.events] == ["TicketCreated"]
        async with conn.transaction():
            await handler.execute(conn, [(LinkDetection(tid, detection("d2")), CTX)])
        events = await store.read_stream(conn, tid)
        assert [(e.type, e.version) for e in events] == [("created", 1), ("detection_added", 2)]
        assert events[0].metadata == {
            "actor": "alice@example.com", "correlation_id": "corr", "causation_id": None,
            "oid": "org", "ticket_number": 1, "schema": 1,
        }  # fmt: skip
        assert (
            await conn.fetchval("SELECT ticket_id FROM ticket_index WHERE oid='org' AND ticket_number=1")
            == tid
        )
        owned = await conn.fetch(
            "SELECT detection_id FROM detection_index WHERE ticket_id=$1 ORDER BY 1", tid
        )
        assert [r[0] for r in owned] == ["d1", "d2"]


async def test_a_detection_belongs_to_one_ticket_per_org(pool: db.Pool) -> None:
    handler = make_handler(lambda: NOW)
    first, second = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await handler.execute(conn, [(OpenTicket(first, "org", 1, "low", detection("d1")), CTX)])
        with pytest.raises(DetectionAlreadyLinked, match="d1"):
            async with conn.transaction():
                await handler.execute(conn, [(OpenTicket(second, "org", 2, "low", detection("d1")), CTX)])
        assert await store.read_stream(conn, second) == []
        async with conn.transaction():  # the same detection id in another org is another detection
            await handler.execute(
                conn, [(OpenTicket(second, "org2", 1, "low", detection("d1", "org2")), CTX)]
            )


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[dict[uuid.UUID, int]]:
    """What each read_streams call asked for: stream -> first version."""
    asked: list[dict[uuid.UUID, int]] = []
    read_streams = store.read_streams

    async def spy(conn: db.Connection, first: dict[uuid.UUID, int]) -> object:
        asked.append(dict(first))
        return await read_streams(conn, first)

    monkeypatch.setattr(store, "read_streams", spy)
    return asked


async def test_cached_states_read_only_newer_events_and_never_trust_an_append_that_did_not_commit(
    pool: db.Pool, reads: list[dict[uuid.UUID, int]]
) -> None:
    handler, other = make_handler(lambda: NOW), make_handler(lambda: NOW)  # other: another process
    tid = uuid.uuid4()

    async def link(h: CommandHandler, conn: db.Connection, d: str, fail: bool = False) -> list[str]:
        async with conn.transaction():
            outcome = await h.execute(conn, [(LinkDetection(tid, detection(d)), CTX)])
            if fail:
                raise RuntimeError("rolled back")
        return list(outcome.states[tid].detections)

    async with pool.acquire() as conn:
        async with conn.transaction():
            await handler.execute(conn, [(OpenTicket(tid, "org", 1, "low", detection("d1")), CTX)])
        assert await link(handler, conn, "d2") == ["d1", "d2"]
        assert reads[-1] == {tid: 1}  # from its own last event on, not the whole stream

        with pytest.raises(RuntimeError):
            await link(handler, conn, "d3", fail=True)  # the cache saw version 3, the store never did
        assert await link(handler, conn, "d4") == ["d1", "d2", "d4"]
        assert reads[-1] == {tid: 1}  # version 3 missing: read again from the start

        assert await link(other, conn, "d5") == ["d1", "d2", "d4", "d5"]
        assert await link(handler, conn, "d6") == ["d1", "d2", "d4", "d5", "d6"]  # caught up
        assert reads[-1] == {tid: 3}

        with pytest.raises(RuntimeError):
            await link(handler, conn, "d7", fail=True)  # cached: version 6 = d7, never committed
        assert await link(other, conn, "d8") == ["d1", "d2", "d4", "d5", "d6", "d8"]  # version 6 = d8
        assert await link(handler, conn, "d9") == ["d1", "d2", "d4", "d5", "d6", "d8", "d9"]
        assert reads[-2:] == [{tid: 6}, {tid: 1}]  # another event at version 6: read from the start
        assert [e.version for e in await store.read_stream(conn, tid)] == list(range(1, 8))


async def test_a_count_on_a_ticket_out_of_the_cache_appends_at_its_head_without_reading_it(
    pool: db.Pool, reads: list[dict[uuid.UUID, int]]
) -> None:
    writer, counter, rival = make_handler(lambda: NOW), make_handler(lambda: NOW), make_handler(lambda: NOW)
    tid = uuid.uuid4()
    count = (CountDuplicates(tid, 2, NOW), CommandContext(actor="system:ingest"))
    async with pool.acquire() as conn:
        async with conn.transaction():
            await writer.execute(conn, [(OpenTicket(tid, "org", 7, "low", detection("d1")), CTX)])
            await writer.execute(conn, [(LinkDetection(tid, detection("d2")), CTX)])
        reads.clear()
        async with conn.transaction():
            outcome = await counter.execute(conn, [count])
        assert reads == [{}]  # the stream was not read; nor cached: nothing of it was folded
        assert [type(e).__name__ for e in outcome.events] == ["DuplicatesSeen"]
        events = await store.read_stream(conn, tid)
        assert [(e.type, e.version) for e in events][-1] == ("duplicates_seen", 3)
        assert (events[-1].metadata["oid"], events[-1].metadata["ticket_number"]) == ("org", 7)

        # The writer's cached state (version 2) is checked and caught up as before.
        async with conn.transaction():
            linked = await writer.execute(conn, [(LinkDetection(tid, detection("d3")), CTX)])
        assert (linked.states[tid].duplicate_count, linked.states[tid].version) == (2, 4)

        async with conn.transaction():  # a ticket that is gone (archived, purged): nothing to count on
            assert (await counter.execute(conn, [(CountDuplicates(uuid.uuid4(), 1, NOW), CTX)])).events == []

    # Two writers appending at the same head: the later one is refused, as any append would be.
    async with pool.acquire() as first, pool.acquire() as second:
        async with first.transaction():
            await counter.execute(first, [count])
            racing = asyncio.create_task(_in_transaction(second, rival, [count]))
            await asyncio.sleep(0.3)  # the rival read the same head and waits for the append lock
        with pytest.raises(ConcurrencyError):
            await racing
    async with pool.acquire() as conn:
        assert [e.version for e in await store.read_stream(conn, tid)] == list(range(1, 6))


async def _in_transaction(
    conn: db.Connection, handler: CommandHandler, commands: list[tuple[CountDuplicates, CommandContext]]
) -> None:
    async with conn.transaction():
        await handler.execute(conn, commands)
