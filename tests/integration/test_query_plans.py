"""Dashboard and report queries use indexes: on 1,000,000 tickets, a single-org query never scans
the whole table. The ingest's per-batch key lookups probe their index once per key at any size, and
the scheduler's per-second questions and retention's per-minute one read what is due, not every
open, resolved or closed ticket."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from domain.config import DEFAULT_CONFIG
from domain.escalation import EscalationStep
from domain.severity import SEVERITIES
from projections import reports, rule_report
from projections.ticket_queries import TicketFilter, list_tickets
from services.commands.indexes import claimed_detections
from services.commands.intake import group_candidates
from services.eventstore import db
from services.scheduler.deadlines import _auto_closes, _escalation_checks, _sla_checks
from services.scheduler.retention import due

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def fill(conn: db.Connection, n: int, orgs: int, detection_ids: bool = False) -> None:
    """Rows straight into the read model (the event path is not what this test measures), the
    table's other indexes built once after them, as a rebuild does, not row by row (a minute less
    for a million); `detection_ids`: each ticket's first detection id is its ticket id."""
    indexes = await conn.fetch(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = 'tickets'::regclass AND NOT indisunique"
    )
    for name, _ in indexes:
        await conn.execute(f"DROP INDEX {name}")
    await conn.execute(
        f"""
        INSERT INTO tickets (ticket_id, oid, ticket_number, status, severity, severity_rank, classification,
                             detection_count, detection_cat, sensor_id, hostname, created_at, updated_at,
                             status_changed_at, acknowledged_at, detection_id)
        SELECT id, 'org-' || (i % $2), i,
               (ARRAY['new','acknowledged','in_progress','escalated','resolved','closed'])[1 + i % 6],
               (ARRAY['critical','high','medium','low'])[1 + i % 4], 1 + i % 4,
               (ARRAY['pending','true_positive','false_positive'])[1 + i % 3],
               1, 'cat-' || (i % 20), 'sensor-' || (i % 500), 'host', t, t, t,
               CASE WHEN i % 6 > 0 THEN t + interval '5 minutes' END, {"id::text" if detection_ids else "NULL"}
        FROM generate_series(1, $1) AS i,
             LATERAL (SELECT $3::timestamptz - (i % 90) * interval '1 day' AS t, gen_random_uuid() AS id) AS x
        """,
        n,
        orgs,
        NOW,
    )
    await conn.execute("SET maintenance_work_mem = '256MB'")
    for _, definition in indexes:
        await conn.execute(definition)
    await conn.execute("RESET maintenance_work_mem")
    await conn.execute("ANALYZE tickets")


TICKET_TABLES = ("tickets", "archived_tickets")


def scans(plan: Any, tables: tuple[str, ...] = TICKET_TABLES) -> list[str]:
    out = []
    if isinstance(plan, dict):
        if plan.get("Relation Name") in tables:
            out.append(plan["Node Type"])
        for child in plan.get("Plans", []):
            out += scans(child, tables)
    return out


async def explain(
    conn: db.Connection, sql: str, *args: Any, tables: tuple[str, ...] = TICKET_TABLES
) -> list[str]:
    [[doc]] = await conn.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return scans(json.loads(doc)[0]["Plan"], tables)


class Recorder:
    """Runs a function's real queries on `conn` and records them for EXPLAIN."""

    def __init__(self, conn: db.Connection) -> None:
        self.conn = conn
        self.captured: list[tuple[str, tuple[Any, ...]]] = []
        self.executed: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        self.captured.append((sql, args))
        return list(await self.conn.fetch(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self.executed.append(sql)
        return await self.conn.execute(sql, *args)

    def transaction(self) -> Any:
        return self.conn.transaction()


@pytest.mark.timeout(600)
async def test_single_org_queries_use_indexes_on_a_million_tickets(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        await fill(conn, 1_000_000, orgs=200, detection_ids=True)
        # a queue of 20 orgs, in every order: each org's own ordered index, stopped at the page (a
        # lateral join), not a scan and sort of all their tickets
        twenty = [f"org-{i}" for i in range(20)]
        for sort in ("created_at", "severity", "ticket_number", "duplicate_count", "sla_due"):
            queue = Recorder(conn)
            page, token, _ = await list_tickets(queue, TicketFilter(oids=twenty, sort=sort), None)  # type: ignore[arg-type]
            assert len(page) == 50 and token
            [(sql, args)] = [c for c in queue.captured if "LATERAL" in c[0]]
            nodes = await explain(conn, sql, *args)
            assert nodes and set(nodes) <= {"Index Scan", "Index Scan Backward", "Index Only Scan"}, (
                sort,
                nodes,
            )
        configs = {"org-7": DEFAULT_CONFIG}
        recorder = Recorder(conn)
        await reports.dashboard_counts(recorder, configs, NOW)  # type: ignore[arg-type]
        await reports.summary_rows(recorder, configs, NOW - timedelta(days=30), NOW, "severity", NOW)  # type: ignore[arg-type]
        # the queue's most urgent clocks first: one range of the org's running clocks
        urgent_first = TicketFilter(oids=["org-7"], sort="sla_due", order="asc")
        urgent, _, _ = await list_tickets(recorder, urgent_first, None)  # type: ignore[arg-type]
        assert len(urgent) == 50
        recorder.captured = [c for c in recorder.captured if "ticket_counts" not in c[0]]
        # the rule report: one org's detections of 90 days (each ticket here holds one)
        await conn.execute(
            "INSERT INTO ticket_detections (ticket_id, detection_id, oid, detection_cat, detection_source,"
            " detection_priority, sensor_id, hostname, detected_at, source_format, linked_at, position)"
            " SELECT ticket_id, ticket_id::text, oid, detection_cat, 'src', 5, sensor_id, hostname, created_at,"
            " 'limacharlie', created_at, ticket_number FROM tickets"
        )
        await conn.execute("ANALYZE tickets, ticket_detections")
        await rule_report.rule_report(recorder, configs, NOW - timedelta(days=90), NOW)  # type: ignore[arg-type]
        assert len(recorder.captured) == 4
        # a prepared statement's generic plan (after five runs) took 15 times as long here (1.5 s
        # instead of 0.1 s, docs/benchmarks.md): the report plans for its own period each time
        assert recorder.executed == ["SET LOCAL plan_cache_mode = force_custom_plan"]
        for sql, args in recorder.captured:
            nodes = await explain(conn, sql, *args, tables=(*TICKET_TABLES, "ticket_detections"))
            assert nodes, sql
            assert "Seq Scan" not in nodes, (sql, nodes)


async def test_ingest_key_lookups_probe_the_index_per_key(pool: db.Pool) -> None:
    """At 160,000 claimed detections a plain join of the batch's keys hashed the whole
    detection index (36 ms per batch instead of 3); the lookups must stay index probes."""
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO detection_index SELECT 'org-' || (i % 4), 'det-' || md5(i::text), gen_random_uuid()"
            " FROM generate_series(1, 160000) AS i"
        )
        await conn.execute(
            "INSERT INTO grouping_index SELECT gen_random_uuid(), 'org-' || (i % 4), 'key-' || (i % 5000),"
            " $1::timestamptz - i * interval '1 second', 1, true FROM generate_series(1, 160000) AS i",
            NOW,
        )
        await conn.execute("ANALYZE detection_index, grouping_index")
        recorder = Recorder(conn)
        found = await claimed_detections(
            recorder,  # type: ignore[arg-type]
            [
                ("org-1", "det-" + "c4ca4238a0b923820dcc509a6f75849b"),
                *((f"org-{i % 4}", f"new-{i}") for i in range(2000)),
            ],
        )
        assert list(found) == [("org-1", "det-c4ca4238a0b923820dcc509a6f75849b")]  # md5('1')
        groups = await group_candidates(
            recorder,  # type: ignore[arg-type]
            [(f"org-{i % 4}", f"key-{i}") for i in range(2000)],
            NOW - timedelta(hours=1),
            NOW,
        )
        # key-i of org i % 4 was first seen i seconds ago (and again every 5,000 s): within the hour, one
        assert groups.keys() == {(f"org-{i % 4}", f"key-{i}") for i in range(1, 2000)}
        assert all(len(g) == 1 for g in groups.values())
        resolved = await group_candidates(
            recorder,  # type: ignore[arg-type]
            [(f"org-{i % 4}", f"key-{i}") for i in range(2000)],
            NOW - timedelta(hours=1),
            NOW,
            resolved=True,
        )
        assert resolved == {}  # none of them is resolved; the partial index of resolved ones is read
        assert len(recorder.captured) == 3
        for sql, args in recorder.captured:
            nodes = await explain(conn, sql, *args, tables=("detection_index", "grouping_index"))
            assert nodes, sql
            assert "Seq Scan" not in nodes, (sql, nodes)


async def buffers(conn: db.Connection, sql: str, *args: Any) -> int:
    """Shared buffers the query touched when run."""
    [[doc]] = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args)
    plan = json.loads(doc)[0]["Plan"]
    return int(plan["Shared Hit Blocks"] + plan["Shared Read Blocks"])


async def settle(conn: db.Connection, table: str) -> None:
    """The table as autovacuum keeps a settled one: analysed, every page all-visible. A VACUUM
    cannot mark pages whose rows a concurrent snapshot (an autovacuum worker's, say) may not see
    yet, so it is repeated until they all are."""
    await conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off)")
    await conn.execute(f"ANALYZE {table}")
    for _ in range(50):
        await conn.execute(f"VACUUM {table}")
        if await conn.fetchval("SELECT relallvisible = relpages FROM pg_class WHERE relname = $1", table):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{table}: pages not all-visible after 50 VACUUMs")


async def test_scheduler_reads_only_what_is_due(pool: db.Pool) -> None:
    """A steady state: 200,000 tickets of 20 orgs, 5% open with their breaches already recorded,
    the resolved ones all younger than the auto-close age, the settled ones younger than the
    retention. Each tick (every second) found nothing due but read every open and every resolved
    ticket's heap page (~4,600 pages each), and each retention pass (every minute) every resolved
    and closed ticket; they must read only index pages."""
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO tickets (ticket_id, oid, ticket_number, status, severity, severity_rank,
                                 detection_count, created_at, updated_at, status_changed_at,
                                 mtta_breached_at, mttr_breached_at)
            SELECT gen_random_uuid(), 'org-' || (i % 20), i,
                   CASE WHEN i % 20 = 0 THEN 'new' WHEN i % 2 = 0 OR i % 90 >= 7 THEN 'closed'
                        ELSE 'resolved' END,
                   (ARRAY['critical','high','medium','low'])[1 + i % 4], 1 + i % 4, 1, t, t, t,
                   t + interval '15 minutes', t + interval '4 hours'
            FROM generate_series(1, 200000) AS i,
                 LATERAL (SELECT $1::timestamptz - (i % 90) * interval '1 day' - interval '1 day' AS t) AS x
            """,
            NOW,
        )
        # every step of their escalation policies taken long ago
        await conn.execute("UPDATE tickets SET escalation_steps = 2 WHERE status = 'new'")
        await settle(conn, "tickets")
        steps = (
            EscalationStep(after_minutes=5, notify=("soc",)),
            EscalationStep(after_minutes=30, escalate_to="t2"),
        )
        configs = {
            f"org-{i}": msgspec.structs.replace(
                DEFAULT_CONFIG, retention_days=91, escalation_policies={s: steps for s in SEVERITIES}
            )
            for i in range(20)
        }
        recorder = Recorder(conn)
        assert await _sla_checks(recorder, configs, NOW) == []  # type: ignore[arg-type]
        assert await _auto_closes(recorder, configs, NOW) == []  # type: ignore[arg-type]
        assert await due(recorder, configs, NOW) == []  # type: ignore[arg-type]
        assert await _escalation_checks(recorder, configs, NOW) == []  # type: ignore[arg-type]
        assert len(recorder.captured) == 4
        for sql, args in recorder.captured:
            assert await buffers(conn, sql, *args) < 500, sql
        # and what is due is still found: one clock run out, one ticket resolved long ago
        await conn.execute(
            "UPDATE tickets SET mttr_breached_at = NULL, escalation_steps = 1 WHERE ticket_number = 20;"
            "UPDATE tickets SET status = 'resolved' WHERE ticket_number = 31"  # 31 % 90 days old
        )
        [check] = await _sla_checks(conn, configs, NOW)
        [close] = await _auto_closes(conn, configs, NOW)
        numbers = await conn.fetch(
            "SELECT ticket_number FROM tickets WHERE ticket_id = ANY($1::uuid[]) ORDER BY 1",
            [check.ticket_id, close.ticket_id],
        )
        assert [r[0] for r in numbers] == [20, 31]
        [escalation] = await _escalation_checks(conn, configs, NOW)  # its step 2 is due
        assert escalation.ticket_id == check.ticket_id and escalation.steps == steps
        configs["org-9"] = DEFAULT_CONFIG  # 90 days: its tickets settled 90 days ago are due
        oldest = await due(conn, configs, NOW, limit=5)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM tickets WHERE ticket_id = ANY($1::uuid[]) AND oid = 'org-9'"
                " AND status IN ('resolved', 'closed') AND status_changed_at <= $2",
                oldest,
                NOW - timedelta(days=90),
            )
            == len(oldest)
            == 5
        )


async def test_search_reads_the_matches_not_the_whole_org(pool: db.Pool) -> None:
    """`search` is a substring (ILIKE '%x%'): without trigram indexes a large org's search read every
    one of its tickets (every heap page of 200,000 here) to find three."""
    async with pool.acquire() as conn:
        await fill(conn, 200_000, orgs=1)
        await conn.execute(
            "UPDATE tickets SET hostname = 'db-prod-17.corp' WHERE ticket_number IN (10, 90000, 190000)"
        )
        await conn.execute("VACUUM ANALYZE tickets")
        recorder = Recorder(conn)
        tickets, _, _ = await list_tickets(recorder, TicketFilter(oids=["org-0"], search="PROD-17"), None)  # type: ignore[arg-type]
        assert sorted(t.ticket_number for t in tickets) == [10, 90000, 190000]
        sql, args = recorder.captured[0]
        assert await buffers(conn, sql, *args) < 500
