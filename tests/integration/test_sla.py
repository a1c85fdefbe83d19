"""SLA breaches and auto-close, in simulated time through the real scheduler tick."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.commands import LinkDetection, TicketChanges, UpdateTicket
from domain.config import DEFAULT_CONFIG
from domain.detections import Detection
from domain.events import decode_ticket_event
from domain.sla import deadline
from domain.ticket import evolve
from projections.registry import all_projections
from projections.reports import dashboard_counts
from projections.ticket_queries import TicketFilter, list_tickets
from services.commands.configs import load_configs, update_config
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler, execute_one
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from services.scheduler import deadlines as scheduler
from services.scheduler.deadlines import tick
from tests.integration.support import NewTicket, open_tickets

T0 = datetime(2026, 6, 1, 8, tzinfo=UTC)
ALICE = CommandContext(actor="alice@example.com")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, **delta: float) -> None:
        self.now = T0 + timedelta(**delta)


def det(i: str, priority: int = 3) -> Detection:
    return Detection(
        detection_id=i, oid="sla-org", detection_cat="c", detection_source="s", detection_priority=priority,
        sensor_id="s", hostname="h", detected_at=T0, source_format="limacharlie",
    )  # fmt: skip


async def open_ticket(pool: db.Pool, handler: CommandHandler, severity: str) -> uuid.UUID:
    tid = uuid.uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await open_tickets(conn, handler, [NewTicket(tid, "sla-org", severity, det(str(tid)), ALICE)])  # type: ignore[arg-type]
    return tid


async def run_tick(pool: db.Pool, handler: CommandHandler) -> Any:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    return await tick(pool, handler)


async def breaches(pool: db.Pool, tid: uuid.UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, tid)
    return [json.loads(e.data) | {"by": e.metadata["actor"]} for e in events if e.type == "sla_breached"]


async def status(pool: db.Pool, handler: CommandHandler, tid: uuid.UUID, to: str) -> None:
    await execute_one(pool, handler, UpdateTicket(tid, TicketChanges(status=to)), ALICE)  # type: ignore[arg-type]


async def test_mtta_acknowledged_just_before_and_just_after(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    before, after = await open_ticket(pool, handler, "critical"), await open_ticket(pool, handler, "critical")
    clock.at(minutes=14, seconds=59)
    assert (await run_tick(pool, handler)).breaches == 0
    await status(pool, handler, before, "acknowledged")
    clock.at(minutes=15)  # exactly the deadline: breached
    assert (await run_tick(pool, handler)).breaches == 1
    await status(pool, handler, after, "acknowledged")
    clock.at(minutes=30)
    assert (await run_tick(pool, handler)).breaches == 0  # once per breach, and no breach after the ack
    assert await breaches(pool, before) == []
    [b] = await breaches(pool, after)
    assert (b["kind"], b["target_minutes"], b["severity"], b["by"]) == ("mtta", 15, "critical", "system")
    assert b["deadline"] == (T0 + timedelta(minutes=15)).isoformat().replace("+00:00", "Z")


async def test_severity_upgrade_tightens_the_deadline(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    tid = await open_ticket(pool, handler, "medium")  # MTTA 60 minutes
    clock.at(minutes=5)
    await execute_one(pool, handler, LinkDetection(tid, det("hot", 9), "critical"), ALICE)
    clock.at(minutes=16)
    assert (await run_tick(pool, handler)).breaches == 1
    [b] = await breaches(pool, tid)
    assert (b["kind"], b["target_minutes"], b["severity"]) == ("mtta", 15, "critical")


async def test_mttr_counts_the_first_resolution_even_after_a_reopen(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    reopened, never = await open_ticket(pool, handler, "high"), await open_ticket(pool, handler, "high")
    clock.at(minutes=10)
    for tid in (reopened, never):
        await status(pool, handler, tid, "acknowledged")
        await status(pool, handler, tid, "in_progress")
    clock.at(hours=1)
    await status(pool, handler, reopened, "resolved")
    clock.at(hours=2)
    await status(pool, handler, reopened, "in_progress")  # reopened, still unresolved now
    clock.at(hours=11, minutes=59)
    assert (await run_tick(pool, handler)).breaches == 0
    clock.at(hours=12)  # high: MTTR 720 minutes
    assert (await run_tick(pool, handler)).breaches == 1
    assert await breaches(pool, reopened) == []
    assert [b["kind"] for b in await breaches(pool, never)] == ["mttr"]


async def test_closed_tickets_breach_nothing_and_both_clocks_can_breach(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    closed, ignored = await open_ticket(pool, handler, "low"), await open_ticket(pool, handler, "low")
    await status(pool, handler, closed, "closed")
    clock.at(hours=48)  # low: MTTA 100 min, MTTR 2800 min
    assert (await run_tick(pool, handler)).breaches == 2
    assert await breaches(pool, closed) == []
    assert sorted(b["kind"] for b in await breaches(pool, ignored)) == ["mtta", "mttr"]


async def test_auto_close_after_the_configured_days(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, "sla-org", {"auto_close_resolved_after_days": 3}, ALICE, T0)
    tid = await open_ticket(pool, handler, "low")
    await status(pool, handler, tid, "in_progress")
    clock.at(hours=1)
    await status(pool, handler, tid, "resolved")
    clock.at(days=3, minutes=59)
    assert (await run_tick(pool, handler)).closed == 0
    clock.at(days=3, hours=1)
    assert (await run_tick(pool, handler)).closed == 1
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, tid)
    assert [(e.type, e.metadata["actor"]) for e in events[-2:]] == [
        ("status_changed", "system"),
        ("closed", "system"),
    ]
    assert (await run_tick(pool, handler)).closed == 0


async def test_due_tickets_are_recorded_in_batches_and_a_refused_one_stops_nothing(
    pool: db.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seven due tickets in batches of three. An eighth is in the read model but no longer in the
    store (archived a moment ago, the projection not there yet): its refusal is logged and skipped,
    and the batch it was in is still recorded."""
    monkeypatch.setattr(scheduler, "TICK_BATCH", 3)
    clock = Clock()
    handler = CommandHandler(clock)
    tickets = [await open_ticket(pool, handler, "critical") for _ in range(7)]
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    gone = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tickets (ticket_id, oid, ticket_number, status, severity, severity_rank,"
            " created_at, updated_at) VALUES ($1, 'sla-org', 99, 'new', 'critical', 4, $2, $2)",
            gone,
            T0,
        )
    clock.at(minutes=15)  # critical: MTTA 15 min
    assert (await run_tick(pool, handler)).breaches == 7
    for tid in tickets:
        assert [b["kind"] for b in await breaches(pool, tid)] == ["mtta"]
    assert (await run_tick(pool, handler)).breaches == 0  # recorded once


async def test_at_risk_fires_once_at_the_orgs_share_of_the_budget(pool: db.Pool) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, "sla-org", {"sla_at_risk_percent": 50}, ALICE, T0)
    tid, acked = await open_ticket(pool, handler, "critical"), await open_ticket(pool, handler, "critical")
    clock.at(minutes=7, seconds=29, microseconds=999_999)  # MTTA 15 minutes: at risk at 7:30
    assert (await run_tick(pool, handler)).at_risk == 0
    clock.at(minutes=7, seconds=30)
    assert (await run_tick(pool, handler)).at_risk == 2
    await status(pool, handler, acked, "acknowledged")
    clock.at(minutes=14)
    assert (await run_tick(pool, handler)).at_risk == 0  # once per clock
    clock.at(minutes=120)  # MTTR 240 minutes: at risk at 120, for both (the MTTR clock still runs)
    result = await run_tick(pool, handler)
    assert (result.at_risk, result.breaches) == (2, 1)  # and the unacknowledged one breached MTTA
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, tid)
    risks = [json.loads(e.data) for e in events if e.type == "sla_at_risk"]
    assert [(r["kind"], r["percent"], r["target_minutes"]) for r in risks] == [
        ("mtta", 50, 15),
        ("mttr", 50, 240),
    ]
    assert risks[0]["at_risk_at"] == (T0 + timedelta(minutes=7, seconds=30)).isoformat().replace(
        "+00:00", "Z"
    )
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT mtta_at_risk_at, mttr_at_risk_at FROM tickets WHERE ticket_id = $1", tid
        )
        configs = await load_configs(conn, ["sla-org"])
        counts = await dashboard_counts(conn, configs, clock.now)
        at_risk, _, _ = await list_tickets(conn, TicketFilter(oids=["sla-org"], sla=["at_risk"]), None)
        breached, _, _ = await list_tickets(conn, TicketFilter(oids=["sla-org"], sla=["breached"]), None)
    assert (counts.total.sla_at_risk.mtta, counts.total.sla_at_risk.mttr) == (0, 2)
    assert (counts.total.sla_breaches.mtta, counts.total.sla_breaches.mttr) == (1, 0)
    assert (
        row is not None
        and row[0] == T0 + timedelta(minutes=7, seconds=30)
        and row[1] == T0 + timedelta(minutes=120)
    )
    assert {t.ticket_id for t in at_risk} == {tid, acked} and [t.ticket_id for t in breached] == [tid]


async def test_the_queue_sorts_by_the_most_urgent_running_clock_as_the_domain_computes_it(
    pool: db.Pool,
) -> None:
    """`sort=sla_due`: open tickets with a running clock, earliest deadline first, deadlines as
    domain.sla computes them under the org's targets; a change of targets reorders them; the SQL
    defaults are DEFAULT_CONFIG's."""
    async with pool.acquire() as conn:
        defaults = {r[0]: (r[1], r[2]) for r in await conn.fetch("SELECT * FROM ticketing_default_sla()")}
    assert defaults == {s: (t.mtta_minutes, t.mttr_minutes) for s, t in DEFAULT_CONFIG.sla_config.items()}
    clock = Clock()
    handler = CommandHandler(clock)
    opened = {}
    for minutes, severity in [
        (0, "low"),
        (1, "critical"),
        (2, "high"),
        (3, "medium"),
        (4, "critical"),
        (5, "high"),
    ]:
        clock.at(minutes=minutes)
        opened[minutes] = await open_ticket(pool, handler, severity)
    clock.at(minutes=10)
    await status(pool, handler, opened[1], "acknowledged")  # its MTTR clock now runs
    await status(pool, handler, opened[4], "closed")  # no clock
    await status(pool, handler, opened[3], "in_progress")  # never acknowledged: no acknowledged_at

    async def queue() -> list[uuid.UUID]:
        for p in all_projections():
            await catch_up(pool, p.name, p.apply)
        out, token = [], None
        async with pool.acquire() as conn:
            while True:  # two at a time: the keyset pages too
                page, token, _ = await list_tickets(
                    conn, TicketFilter(oids=["sla-org"], sort="sla_due", order="asc", page_size=2), token
                )
                out += [t.ticket_id for t in page]
                if token is None:
                    return out

    async def expected() -> list[uuid.UUID]:
        async with pool.acquire() as conn:
            config = (await load_configs(conn, ["sla-org"]))["sla-org"]
            states = {tid: await store.read_stream(conn, tid) for tid in opened.values()}
        due = {}
        for tid, events in states.items():
            s = None
            for e in events:
                s = evolve(s, decode_ticket_event(e.data, e.type, e.schema))
            assert s is not None
            if s.status in ("closed", "resolved", "merged") or (s.acknowledged_at and s.resolved_at):
                continue
            due[tid] = deadline(
                s.created_at, config.sla_config[s.severity], "mtta" if s.acknowledged_at is None else "mttr"
            )
        return sorted(due, key=lambda t: (due[t], t))

    got = await queue()
    assert got == await expected() and len(got) == 5 and opened[4] not in got
    assert got[-1] == opened[1]  # acknowledged: its 4-hour MTTR clock is the least urgent
    async with pool.acquire() as conn, conn.transaction():  # the org gives high tickets 1 minute
        await update_config(
            conn, "sla-org", {"sla_config": {"high": {"mtta_minutes": 1, "mttr_minutes": 60}}}, ALICE, T0
        )
    reordered = await queue()
    assert reordered == await expected() and reordered[:2] == [opened[2], opened[5]]
