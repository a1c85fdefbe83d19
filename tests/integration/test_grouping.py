"""Org configuration and auto-grouping through the real ingest path and API."""

import json
from collections.abc import AsyncIterator

import pytest

from domain.commands import TicketChanges, UpdateTicket
from projections.registry import all_projections
from services.auth.tokens import PERMISSIONS, TokenService
from services.bootstrap import make_handler
from services.commands.configs import config_stream
from services.commands.handlers import execute_one
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer, counts_drift
from tests.integration.support import ADMIN, configure, ingest, lc, serve


async def groups(pool: db.Pool, oid: str) -> dict[str, list[str]]:
    """first detection id of each ticket -> the detection ids the ticket holds, from the write side."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ticket_id, array_agg(detection_id ORDER BY detection_id) FROM detection_index"
            " WHERE oid = $1 GROUP BY ticket_id",
            oid,
        )
        firsts = await conn.fetch(
            "SELECT stream_id, data->'detection'->>'detection_id' FROM events WHERE type = 'created'"
            " AND data->>'oid' = $1",
            oid,
        )
    first = {r[0]: r[1] for r in firsts}
    return {first[r[0]]: list(r[1]) for r in rows}


async def test_a_burst_becomes_one_ticket(pool: db.Pool) -> None:
    await configure(pool, "g1", auto_grouping_enabled=True)
    burst = [lc("g1", m) for m in range(0, 50, 5)]  # 10 within the hour
    other_sensor = lc("g1", 1, sensor="s2")
    later = lc("g1", 61)  # 61 minutes after the group's first detection
    await ingest(pool, [*burst, other_sensor, later])
    g = await groups(pool, "g1")
    assert sorted(len(v) for v in g.values()) == [1, 1, 10]
    assert sorted(g[burst[0]["detect_id"]]) == sorted(d["detect_id"] for d in burst)
    async with pool.acquire() as conn:
        counts = await conn.fetch("SELECT detection_count FROM grouping_index WHERE oid = 'g1' ORDER BY 1")
    assert [r[0] for r in counts] == [1, 1, 10]


async def test_long_keys_in_a_wide_script_group(pool: db.Pool) -> None:
    """A category and a sensor of 1,024 CJK characters make a 6 KiB grouping key, more than a btree
    entry holds: before migration 0012 the batch was refused, on every re-delivery."""
    await configure(pool, "g7", auto_grouping_enabled=True)
    cat = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(1024))
    sensor = cat[::-1]
    same_prefix = cat[:300] + "x" * 724  # shares the indexed first 256 characters of the key
    burst = [lc("g7", m, cat=cat, sensor=sensor) for m in range(3)]
    await ingest(
        pool, [*burst, lc("g7", 4, cat=same_prefix, sensor=sensor), lc("g7", 5, cat=cat, sensor=sensor)]
    )
    g = await groups(pool, "g7")
    assert sorted(len(v) for v in g.values()) == [1, 4]
    assert len(g[burst[0]["detect_id"]]) == 4


async def test_severity_upgrade_and_no_downgrade(pool: db.Pool) -> None:
    await configure(pool, "g2", auto_grouping_enabled=True)
    first, hot, cold = lc("g2", 0, priority=3), lc("g2", 1, priority=9), lc("g2", 2, priority=0)
    await ingest(pool, [first, hot, cold])
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT type, data FROM events WHERE type <> 'config_updated' ORDER BY position"
        )
    types = [r[0] for r in rows]
    assert types == ["created", "detection_added", "severity_upgraded", "detection_added"]
    assert (
        json.loads(rows[2][1])["old_severity"] == "medium"
        and json.loads(rows[2][1])["severity"] == "critical"
    )
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:  # the upgrade moved the ticket between dashboard counts
        counts = await conn.fetch("SELECT severity, n FROM ticket_counts WHERE oid = 'g2' AND n <> 0")
        assert not await counts_drift(conn)
    assert [tuple(r) for r in counts] == [("critical", 1)]


async def test_cap_overflow_links_the_next_ticket(pool: db.Pool) -> None:
    await configure(pool, "g3", auto_grouping_enabled=True, grouping_max_detections=3)
    stream = [lc("g3", m) for m in range(7)]
    await ingest(pool, stream)
    g = await groups(pool, "g3")
    assert sorted(len(v) for v in g.values()) == [1, 3, 3]
    async with pool.acquire() as conn:
        created = [
            json.loads(r[0])
            for r in await conn.fetch("SELECT data FROM events WHERE type = 'created' ORDER BY position")
        ]
    assert created[0]["continues_ticket_id"] is None
    assert created[1]["continues_ticket_id"] == created[0]["ticket_id"]
    assert created[2]["continues_ticket_id"] == created[1]["ticket_id"]


async def test_disabled_grouping_makes_one_ticket_per_detection(pool: db.Pool) -> None:
    await ingest(pool, [lc("g4", m) for m in range(5)])
    assert sorted(len(v) for v in (await groups(pool, "g4")).values()) == [1] * 5


async def test_batch_boundaries_do_not_change_the_outcome(pool: db.Pool) -> None:
    for oid in ("g5a", "g5b"):
        await configure(
            pool, oid, auto_grouping_enabled=True, grouping_max_detections=4, grouping_window_minutes=10
        )
    shape = [(m * 1.5, f"c{m % 2}", f"s{m % 3}", m % 11) for m in range(60)]
    a = [lc("g5a", m, c, s, p) for m, c, s, p in shape]
    b = [{**d, "detect_id": d["detect_id"], "routing": {**d["routing"], "oid": "g5b"}} for d in a]
    await ingest(pool, a, batch=1000)
    await ingest(pool, b, batch=3)
    assert await groups(pool, "g5a") == await groups(pool, "g5b")


async def test_closed_tickets_stop_collecting_and_mapping_changes_are_not_retroactive(
    pool: db.Pool,
) -> None:
    await configure(pool, "g6", auto_grouping_enabled=True)
    first = lc("g6", 0, priority=3)
    await ingest(pool, [first])
    async with pool.acquire() as conn:
        tid = await conn.fetchval("SELECT ticket_id FROM ticket_index WHERE oid = 'g6'")
    await execute_one(pool, make_handler(), UpdateTicket(tid, TicketChanges(status="closed")), ADMIN)
    await configure(pool, "g6", severity_mapping={"critical_min": 3, "high_min": 2, "medium_min": 1})
    await ingest(pool, [lc("g6", 5, priority=3)])
    assert sorted(len(v) for v in (await groups(pool, "g6")).values()) == [1, 1]
    async with pool.acquire() as conn:
        sev = [
            json.loads(r[0])["severity"]
            for r in await conn.fetch("SELECT data FROM events WHERE type = 'created' ORDER BY position")
        ]
    assert sev == ["medium", "critical"]  # the first ticket kept the severity of its time


@pytest.fixture
async def api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    client = await serve(pool, tokens)
    client.session.headers.update(
        bearer(tokens.mint("admin@example.com", {"cfg-org": list(PERMISSIONS)}, ttl_s=600))
    )
    yield client
    await client.close()


async def test_config_api_partial_put_and_audit(api: Client, pool: db.Pool) -> None:
    r = await api.get("/api/v1/config/cfg-org")
    defaults = await r.json()
    assert r.status == 200 and defaults["retention_days"] == 90 and defaults["auto_grouping_enabled"] is False
    assert defaults["grouping_key_fields"] == ["category", "sensor"]
    r = await api.put(
        "/api/v1/config/cfg-org",
        json={"auto_grouping_enabled": True, "sla_config": {"high": {"mtta_minutes": 30}}},
    )
    new = await r.json()
    assert r.status == 200 and new["auto_grouping_enabled"] is True
    assert new["sla_config"]["high"] == {"mtta_minutes": 30, "mttr_minutes": 720}
    assert (await (await api.get("/api/v1/config/cfg-org")).json()) == new
    for bad, field in (({"bogus": 1}, "bogus"), ({"severity_mapping": {"critical_min": 2}}, "severity_mapping"),
                       ({"retention_days": -5}, "retention_days")):  # fmt: skip
        r = await api.put("/api/v1/config/cfg-org", json=bad)
        assert r.status == 422 and (await r.json())["field"].startswith(field)
    r = await api.put("/api/v1/config/cfg-org", json={"auto_grouping_enabled": True})  # no change: no event
    assert r.status == 200
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, config_stream("cfg-org"))
    assert len(events) == 1 and events[0].type == "config_updated"
    body = json.loads(events[0].data)
    assert body["old"]["auto_grouping_enabled"] is False and body["new"]["auto_grouping_enabled"] is True
    assert events[0].metadata["actor"] == "admin@example.com"


async def test_report_and_dashboard_parameters(api: Client) -> None:
    ok = await api.get(
        "/api/v1/reports/summary?oids=cfg-org&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z&group_by=day"
    )
    body = await ok.json()
    assert ok.status == 200 and body["aggregate"]["total"] == 0 and body["group_by"] == "day"
    assert set(body["orgs"]) == {"cfg-org"} and body["aggregate"]["mtta"]["sla_compliance_pct"] is None
    for query, field in (
        ("from=yesterday", "from"),
        ("from=2026-01-01T00:00:00", "from"),
        ("from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "from"),
        ("group_by=colour", "group_by"),
        ("from=0775-09-01T18:42:24Z&to=0001-01-01T01:00:03Z", "from"),  # found by make fuzz: was a 500
        ("to=0001-01-20T00:00:00Z", "from"),  # clamped to 1970, its default "from" is no earlier
    ):
        r = await api.get(f"/api/v1/reports/summary?oids=cfg-org&{query}")
        assert r.status == 422 and (await r.json())["field"] == field, query
    dash = await (await api.get("/api/v1/dashboard/counts?oids=cfg-org")).json()
    none = {"total": 0, "by_status": {}, "by_severity": {}, "sla_breaches": {"mtta": 0, "mttr": 0},
            "sla_at_risk": {"mtta": 0, "mttr": 0}}  # fmt: skip
    assert dash == {"orgs": {"cfg-org": none}, "total": none}
