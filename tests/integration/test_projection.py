import json
import zlib

import asyncpg
import pytest

from domain.commands import TicketChanges, UnlinkDetection, UpdateTicket
from projections.registry import all_projections
from projections.runner import rebuild
from projections.tickets import COPY_MIN_ROWS, TicketsProjection
from services.bootstrap import make_handler
from services.eventstore.postgres import RecordedEvent, read_all
from services.eventstore.subscription import catch_up, checkpoint
from services.handlers import execute_one
from services.ingest.pipeline import RawRecord, ingest_batch
from services.samples import generate
from tests.conftest import counts_drift
from tests.integration.test_ingest_pipeline import Sink


async def seed(pool: asyncpg.Pool, n: int, oid: str = "org-x") -> None:
    detections = list(generate(oid, n, seed=zlib.crc32(oid.encode())))  # distinct ids per org
    batch = [RawRecord("d", 0, i, oid.encode(), json.dumps(d).encode()) for i, d in enumerate(detections)]
    await ingest_batch(pool, make_handler(), batch, Sink(), default_oid=None)


async def snapshot(pool: asyncpg.Pool) -> tuple[list, list]:
    async with pool.acquire() as conn:
        tickets = [tuple(r) for r in await conn.fetch("SELECT * FROM tickets ORDER BY ticket_id")]
        detections = [
            tuple(r)
            for r in await conn.fetch("SELECT * FROM ticket_detections ORDER BY ticket_id, detection_id")
        ]
    return tickets, detections


async def index_definitions(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = ANY($1::text[]) ORDER BY indexname",
            list(TicketsProjection.tables),
        )
    return [r[0] for r in rows]


async def test_projection_writes_tickets_and_checkpoint(pool: asyncpg.Pool) -> None:
    await seed(pool, 25)
    p = TicketsProjection()
    assert await catch_up(pool, p.name, p.apply, limit=7) == 25
    assert await catch_up(pool, p.name, p.apply) == 0  # nothing twice
    async with pool.acquire() as conn:
        assert await checkpoint(conn, p.name) == await conn.fetchval("SELECT max(position) FROM events")
        row = await conn.fetchrow("SELECT * FROM tickets WHERE ticket_number = 1")
        first = await conn.fetchrow("SELECT * FROM ticket_detections WHERE ticket_id = $1", row["ticket_id"])
    assert row["status"] == "new" and row["detection_count"] == 1 and row["classification"] == "pending"
    assert row["detection_id"] == first["detection_id"]
    assert row["severity"] in ("low", "medium", "high", "critical")


async def test_rebuild_reproduces_the_same_rows(pool: asyncpg.Pool) -> None:
    n = COPY_MIN_ROWS + 30
    await seed(pool, n)
    await seed(pool, 10, oid="org-y")
    for p in all_projections():  # live: small batches, rows passed as arrays
        await catch_up(pool, p.name, p.apply, limit=7)
    before = await snapshot(pool)
    assert len(before[0]) == n + 10
    indexes = await index_definitions(pool)
    assert any("tickets_sla_open" in d for d in indexes)
    for p in all_projections():  # rebuild: runs large enough to be COPYed through the stage
        assert await rebuild(pool, p) == n + 10
    assert await snapshot(pool) == before
    assert await index_definitions(pool) == indexes  # dropped for the replay, built again
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == n + 10  # emptied, recounted
        assert not await counts_drift(conn)


async def test_a_copied_run_whose_rows_exist_leaves_them_as_they_are(pool: asyncpg.Pool) -> None:
    """A run large enough to be COPYed, handled twice: the second COPY meets existing keys, rolls
    back to its savepoint and goes the ON CONFLICT DO NOTHING way, in the same transaction."""
    await seed(pool, COPY_MIN_ROWS + 5)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply, limit=10_000)
    before = await snapshot(pool)
    async with pool.acquire() as conn:
        events = await read_all(conn, 0, 10_000)
        async with conn.transaction():
            await p.apply(conn, events)
            # the transaction is still usable: only the savepoint was rolled back
            assert await conn.fetchval("SELECT count(*) FROM tickets") == COPY_MIN_ROWS + 5
        assert not await counts_drift(conn)
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == COPY_MIN_ROWS + 5
    assert await snapshot(pool) == before


async def test_a_whole_history_in_one_batch_gives_the_rows_of_one_event_at_a_time(pool: asyncpg.Pool) -> None:
    """A batch is written creations first, then the other events in runs of one type: the rows
    must be those of applying the log one event at a time, for every kind of interleaving."""
    from tests.integration.test_grouping import ADMIN, configure, ingest, lc  # it imports this module

    await configure(pool, "h1", auto_grouping_enabled=True)
    bursts = [lc("h1", m, sensor=f"s{k}", priority=m % 10) for m in range(12) for k in range(4)]
    await ingest(pool, bursts[:30])
    await ingest(pool, [*bursts[30:], lc("h1", 5, sensor="alone")])
    async with pool.acquire() as conn:
        tickets = [
            r[0] for r in await conn.fetch("SELECT ticket_id FROM ticket_index ORDER BY ticket_number")
        ]
    handler = make_handler()
    await execute_one(pool, handler, UpdateTicket(tickets[0], TicketChanges(status="acknowledged")), ADMIN)
    await execute_one(pool, handler, UnlinkDetection(tickets[1], bursts[5]["detect_id"]), ADMIN)
    async with pool.acquire() as conn, conn.transaction():
        await handler.merge(conn, tickets[0], [tickets[2]], ADMIN)
    await ingest(pool, [lc("h1", 30, sensor="s2", priority=9), lc("h1", 31, sensor="s0")])
    async with pool.acquire() as conn:
        types = {r[0] for r in await conn.fetch("SELECT DISTINCT type FROM events")}
    assert {"created", "detection_added", "severity_upgraded", "detection_removed", "merged_from",
            "merged_into", "status_changed"} <= types  # fmt: skip
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply, limit=1)
    one_at_a_time = await snapshot(pool)
    assert await rebuild(pool, p, batch=10_000) == len(await read_all_events(pool))
    assert await snapshot(pool) == one_at_a_time


async def read_all_events(pool: asyncpg.Pool) -> list[RecordedEvent]:
    async with pool.acquire() as conn:
        return await read_all(conn, 0, 10_000)


class FailingProjection(TicketsProjection):
    """Fails on its third batch, as a rebuild killed half-way would."""

    def __init__(self) -> None:
        self.batches = 0

    async def apply(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        await super().apply(conn, events)
        self.batches += 1
        if self.batches == 3:
            raise RuntimeError("replay failed")


async def test_a_failed_rebuild_leaves_the_old_model_and_its_indexes(pool: asyncpg.Pool) -> None:
    await seed(pool, 30)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)
    before, indexes = await snapshot(pool), await index_definitions(pool)
    async with pool.acquire() as conn:
        position = await checkpoint(conn, p.name)
    with pytest.raises(RuntimeError, match="replay failed"):
        await rebuild(pool, FailingProjection(), batch=5)
    assert await snapshot(pool) == before
    assert await index_definitions(pool) == indexes
    async with pool.acquire() as conn:
        assert await checkpoint(conn, p.name) == position
        assert not await counts_drift(conn)
