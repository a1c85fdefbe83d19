import json
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
import pytest

from domain import events as ev
from domain.commands import TicketChanges, UnlinkDetection, UpdateTicket
from domain.events import decode_event
from domain.severity import SEVERITY_RANK
from projections.registry import all_projections
from projections.runner import rebuild
from projections.tickets import TicketsProjection
from services.bootstrap import create_pool, make_handler
from services.commands.handlers import execute_one
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent, read_all
from services.eventstore.subscription import catch_up, checkpoint
from services.ingest.pipeline import RawRecord, ingest_batch
from services.settings import Settings
from tests.conftest import counts_drift
from tests.integration.support import ADMIN, T0, Sink, caught_up, configure, ingest, lc, seed


async def snapshot(pool: db.Pool) -> tuple[list[Any], list[Any]]:
    async with pool.acquire() as conn:
        tickets = [tuple(r) for r in await conn.fetch("SELECT * FROM tickets ORDER BY ticket_id")]
        detections = [
            tuple(r)
            for r in await conn.fetch("SELECT * FROM ticket_detections ORDER BY ticket_id, detection_id")
        ]
    return tickets, detections


async def index_definitions(pool: db.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename = ANY($1::text[]) ORDER BY indexname",
            list(TicketsProjection.tables),
        )
    return [r[0] for r in rows]


async def test_projection_writes_tickets_and_checkpoint(pool: db.Pool) -> None:
    await seed(pool, 25)
    p = TicketsProjection()
    assert await catch_up(pool, p.name, p.apply, limit=7) == 25
    assert await catch_up(pool, p.name, p.apply) == 0  # nothing twice
    async with pool.acquire() as conn:
        assert await caught_up(conn, p.name)
        row = await conn.fetchrow("SELECT * FROM tickets WHERE ticket_number = 1")
        assert row is not None
        first = await conn.fetchrow("SELECT * FROM ticket_detections WHERE ticket_id = $1", row["ticket_id"])
    assert row["status"] == "new" and row["detection_count"] == 1 and row["classification"] == "pending"
    assert first is not None and row["detection_id"] == first["detection_id"]
    assert row["severity"] in ("low", "medium", "high", "critical")


async def test_rebuild_reproduces_the_same_rows(pool: db.Pool) -> None:
    n = 530
    await seed(pool, n)
    await seed(pool, 10, oid="org-y")
    for p in all_projections():  # live: small batches
        await catch_up(pool, p.name, p.apply, limit=7)
    before = await snapshot(pool)
    assert len(before[0]) == n + 10
    indexes = await index_definitions(pool)
    assert any("tickets_sla_open" in d for d in indexes)
    for p in all_projections():  # rebuild: creations loaded into keyless tables, keys built after
        assert await rebuild(pool, p) == n + 10
    assert await snapshot(pool) == before
    assert await index_definitions(pool) == indexes  # dropped for the replay, built again
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == n + 10  # emptied, recounted
        assert not await counts_drift(conn)
        assert await conn.fetchval("SELECT to_regclass('rebuild_stage_ticket_detections')") is None
    await seed(pool, 3, oid="org-z")  # and counted as they come again
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == n + 13
        assert not await counts_drift(conn)


async def test_a_rebuild_on_a_pool_of_one_connection_gives_the_same_rows(
    pool: db.Pool, settings: Settings
) -> None:
    """Without a second connection the detection rows are parsed in the rebuild's transaction."""
    await seed(pool, 40)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)
    before = await snapshot(pool)
    single = await create_pool(settings.as_owner(), max_size=1)  # rebuild is the owner's command
    try:
        assert await rebuild(single, p) == 40
    finally:
        await single.close()
    assert await snapshot(pool) == before


async def test_a_batch_handled_twice_leaves_the_rows_as_they_are(pool: db.Pool) -> None:
    """At-least-once: a batch handled again (the projector died before its commit was known) meets
    rows already there and leaves them, in the same transaction."""
    await seed(pool, 505)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply, limit=10_000)
    before = await snapshot(pool)
    async with pool.acquire() as conn:
        events = await read_all(conn, 0, 10_000)
        async with conn.transaction():
            await p.apply(conn, events)
            assert await conn.fetchval("SELECT count(*) FROM tickets") == 505
        assert not await counts_drift(conn)
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == 505
    assert await snapshot(pool) == before


async def varied_history(pool: db.Pool) -> None:
    """Grouped bursts, an acknowledgement, an unlinked detection, a merge, more detections after."""

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
    # Re-sends of one ticket's detections in two batches, beside a detection that upgrades it.
    await ingest(pool, [bursts[40], bursts[44], lc("h1", 11, sensor="s0", priority=9)], first_offset=1000)
    await ingest(pool, [bursts[40]], first_offset=2000)
    # An ExtraHop detection over Kafka, then updated on the appliance (riskScore, a new category).
    first = {"id": 9001, "title": "Odd share access", "description": "read 1K files", "type": "cifs",
             "categories": ["sec.lateral"], "mitreTechniques": ["T1021"], "riskScore": 30,
             "startTime": int(T0.timestamp() * 1000), "participants": [{"role": "offender", "hostname": "pc1"}]}  # fmt: skip
    again = {
        **first,
        "riskScore": 95,
        "title": "Odd share access, again",
        "categories": ["sec.lateral", "sec.exfil"],
    }
    for offset, d in enumerate([first, again]):
        record = RawRecord("eh", 0, offset, b"h1", json.dumps(d).encode())
        await ingest_batch(pool, make_handler(), [record], Sink(), default_oid=None)
    async with pool.acquire() as conn:
        types = {r[0] for r in await conn.fetch("SELECT DISTINCT type FROM events")}
    assert {"created", "detection_added", "severity_upgraded", "detection_removed", "merged_from",
            "merged_into", "status_changed", "detection_updated", "tags_updated", "duplicates_seen"} <= types  # fmt: skip


async def test_a_whole_history_in_one_batch_gives_the_rows_of_one_event_at_a_time(pool: db.Pool) -> None:
    """A batch is written creations first, then the other events in runs of one type: the rows
    must be those of applying the log one event at a time, for every kind of interleaving."""
    await varied_history(pool)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply, limit=1)
    one_at_a_time = await snapshot(pool)
    assert await rebuild(pool, p, batch=10_000) == len(await read_all_events(pool))
    assert await snapshot(pool) == one_at_a_time


async def test_the_rows_read_from_stored_documents_are_the_events_fields(pool: db.Pool) -> None:
    """PostgreSQL reads ticket and detection rows from the stored JSON: they must be what the
    domain decodes from the same documents (names, types, timestamps to the microsecond)."""
    await varied_history(pool)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)
    detections: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    created: dict[UUID, tuple[Any, ...]] = {}
    for r in await read_all_events(pool):
        e = decode_event(r.data)
        if isinstance(e, ev.TicketCreated):
            d = e.detection
            assert d is not None
            created[e.ticket_id] = (e.oid, e.ticket_number, e.severity, SEVERITY_RANK[e.severity],
                                    d.detection_id, d.detection_cat, d.detection_source, d.detection_priority,
                                    d.sensor_id, d.hostname, e.ts)  # fmt: skip
        if isinstance(e, ev.SeverityUpgraded):
            t = created[r.stream_id]
            created[r.stream_id] = (*t[:2], e.severity, SEVERITY_RANK[e.severity], *t[4:])
        if isinstance(e, ev.DetectionRemoved):
            del detections[(r.stream_id, e.detection_id)]
        if isinstance(e, ev.DetectionUpdated):
            d, key = e.detection, (r.stream_id, e.detection.detection_id)
            detections[key] = (*msgspec.structs.astuple(d)[:-2], list(d.tags), *detections[key][-2:])
            t = created[r.stream_id]
            if t[4] == d.detection_id:
                created[r.stream_id] = (
                    *t[:5],
                    d.detection_cat,
                    t[6],
                    d.detection_priority,
                    d.sensor_id,
                    d.hostname,
                    t[10],
                )
        brought = [e.detection] if isinstance(e, ev.TicketCreated | ev.DetectionAdded) else []
        for d in e.detections if isinstance(e, ev.MergedFrom) else brought:
            if d is not None:
                detections.setdefault(
                    (r.stream_id, d.detection_id),
                    (*msgspec.structs.astuple(d)[:-2], list(d.tags), e.ts, r.position),
                )
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ticket_id, detection_id, oid, detection_cat, detection_source, detection_priority, sensor_id,"
            " hostname, detected_at, source_format, title, description, tags, linked_at, position"
            " FROM ticket_detections"
        )
        tickets = await conn.fetch(
            "SELECT ticket_id, oid, ticket_number, severity, severity_rank, detection_id, detection_cat,"
            " detection_source, detection_priority, sensor_id, hostname, created_at FROM tickets"
        )
    assert len(detections) > 40 and len({t[2] for t in created.values()}) > 1
    assert {(r[0], r[1]): tuple(r[1:]) for r in rows} == detections
    assert {r[0]: tuple(r[1:]) for r in tickets} == created


async def read_all_events(pool: db.Pool) -> list[RecordedEvent]:
    async with pool.acquire() as conn:
        return await read_all(conn, 0, 10_000)


class AppendedMeanwhile(TicketsProjection):
    """Detections arrive while the rebuild's first pass runs (they commit past its head)."""

    def __init__(self, pool: db.Pool) -> None:
        self.pool = pool

    async def load(self, conn: db.Connection, until: int, side: db.Connection | None) -> int:
        await seed(self.pool, 3, oid="org-late")
        return await super().load(conn, until, side)


async def test_a_rebuild_takes_in_what_is_appended_while_it_runs(pool: db.Pool) -> None:
    await seed(pool, 20)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)
    assert await rebuild(pool, AppendedMeanwhile(pool)) == 23
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM tickets WHERE oid = 'org-late'") == 3
        assert await caught_up(conn, p.name)
    assert await catch_up(pool, p.name, p.apply) == 0


class FailingProjection(TicketsProjection):
    """Fails once its first pass has written the rows, with every index dropped, as a rebuild
    killed half-way would."""

    async def load(self, conn: db.Connection, until: int, side: db.Connection | None) -> int:
        n = await super().load(conn, until, side)
        assert await conn.fetchval("SELECT count(*) FROM tickets") == n
        raise RuntimeError("replay failed")


class FailingStaging(TicketsProjection):
    """Its second connection cannot write, so staging the detection rows fails."""

    async def load(self, conn: db.Connection, until: int, side: db.Connection | None) -> int:
        assert side is not None
        await side.execute("SET default_transaction_read_only = on")
        return await super().load(conn, until, side)


@pytest.mark.parametrize(
    ("failing", "error", "message"),
    [
        (FailingProjection, RuntimeError, "replay failed"),
        (FailingStaging, asyncpg.ReadOnlySQLTransactionError, "read-only"),
    ],
)
async def test_a_failed_rebuild_leaves_the_old_model_and_its_indexes(
    pool: db.Pool, failing: type[TicketsProjection], error: type[Exception], message: str
) -> None:
    await seed(pool, 30)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)
    before, indexes = await snapshot(pool), await index_definitions(pool)
    async with pool.acquire() as conn:
        position = await checkpoint(conn, p.name)
    with pytest.raises(error, match=message):
        await rebuild(pool, failing(), batch=5)
    assert await snapshot(pool) == before
    assert await index_definitions(pool) == indexes
    async with pool.acquire() as conn:
        assert await checkpoint(conn, p.name) == position
        assert not await counts_drift(conn)
