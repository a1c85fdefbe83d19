"""Dashboard and report queries use indexes: on 1,000,000 tickets, a single-org query never scans
the whole table."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from domain.config import DEFAULT_CONFIG
from projections import reports

NOW = datetime(2026, 6, 1, tzinfo=UTC)


async def fill(conn: asyncpg.Connection, n: int, orgs: int) -> None:
    """Rows straight into the read model (the event path is not what this test measures)."""
    await conn.execute(
        """
        INSERT INTO tickets (ticket_id, oid, ticket_number, status, severity, severity_rank, classification,
                             detection_count, detection_cat, sensor_id, hostname, created_at, updated_at,
                             status_changed_at, acknowledged_at)
        SELECT gen_random_uuid(), 'org-' || (i % $2), i,
               (ARRAY['new','acknowledged','in_progress','escalated','resolved','closed'])[1 + i % 6],
               (ARRAY['critical','high','medium','low'])[1 + i % 4], 1 + i % 4,
               (ARRAY['pending','true_positive','false_positive'])[1 + i % 3],
               1, 'cat-' || (i % 20), 'sensor-' || (i % 500), 'host', t, t, t,
               CASE WHEN i % 6 > 0 THEN t + interval '5 minutes' END
        FROM generate_series(1, $1) AS i, LATERAL (SELECT $3::timestamptz - (i % 90) * interval '1 day' AS t) AS x
        """,
        n,
        orgs,
        NOW,
    )
    await conn.execute("ANALYZE tickets")


def scans(plan: Any) -> list[str]:
    out = []
    if isinstance(plan, dict):
        if plan.get("Relation Name") in ("tickets", "archived_tickets"):
            out.append(plan["Node Type"])
        for child in plan.get("Plans", []):
            out += scans(child)
    return out


async def explain(conn: asyncpg.Connection, sql: str, *args: Any) -> list[str]:
    [[doc]] = await conn.fetch(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    return scans(json.loads(doc)[0]["Plan"])


@pytest.mark.timeout(600)
async def test_single_org_queries_use_indexes_on_a_million_tickets(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await fill(conn, 1_000_000, orgs=200)
        configs = {"org-7": DEFAULT_CONFIG}
        captured: list[tuple[str, tuple[Any, ...]]] = []

        class Recorder:
            """Runs the real queries of the report module, and records them for EXPLAIN."""

            async def fetch(self, sql: str, *args: Any) -> list[Any]:
                captured.append((sql, args))
                return list(await conn.fetch(sql, *args))

        await reports.dashboard_counts(Recorder(), configs, NOW)  # type: ignore[arg-type]
        await reports.summary(Recorder(), configs, NOW - timedelta(days=30), NOW, "severity", NOW)  # type: ignore[arg-type]
        assert len(captured) == 2
        for sql, args in captured:
            nodes = await explain(conn, sql, *args)
            assert nodes, sql
            assert "Seq Scan" not in nodes, (sql, nodes)
