"""Dashboard counts and the summary report, cross-checked against a plain-Python computation
from the event log on 10,000 generated tickets."""

import random
import statistics
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.commands import Classification, TicketChanges, TicketCommand, UpdateTicket
from domain.config import DEFAULT_CONFIG, OrgConfig, SlaTarget
from domain.detections import Detection
from domain.events import decode_ticket_event
from domain.sla import deadline
from domain.ticket import TicketState, evolve
from projections import reports
from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.commands.configs import load_configs, update_config
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import bearer, counts_drift
from tests.integration.support import NewTicket, open_tickets, serve

T0 = datetime(2026, 4, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=8)
ORGS = ("rep-a", "rep-b")
ANALYST = CommandContext(actor="analyst@example.com")
CUSTOM = {"sla_config": {"high": {"mtta_minutes": 30, "mttr_minutes": 300}, "low": {"mtta_minutes": 400}}}


class Clock:
    now = T0

    def __call__(self) -> datetime:
        return self.now


def plan(rng: random.Random, tid: uuid.UUID) -> list[tuple[int, TicketChanges]]:
    """Minutes after creation -> change, a plausible random life of one ticket."""
    steps: list[tuple[int, TicketChanges]] = []
    t = 0
    roll = rng.random()
    if roll < 0.1:
        return [(rng.randint(1, 500), TicketChanges(status="closed", classification="false_positive"))]
    if roll < 0.2:
        return []  # never touched
    t += rng.randint(1, 120)
    steps.append((t, TicketChanges(status="acknowledged", assignee=f"a{rng.randint(0, 4)}@x")))
    if rng.random() < 0.8:
        t += rng.randint(1, 60)
        steps.append((t, TicketChanges(status="in_progress")))
        if rng.random() < 0.2:
            t += rng.randint(1, 60)
            steps.append((t, TicketChanges(status="escalated", escalation_group="tier3")))
        if rng.random() < 0.75:
            t += rng.randint(10, 2000)
            verdict: Classification = rng.choice(["true_positive", "false_positive", "pending"])
            steps.append((t, TicketChanges(status="resolved", classification=verdict)))
            if rng.random() < 0.2:
                t += rng.randint(1, 100)
                steps.append((t, TicketChanges(status="in_progress")))
                t += rng.randint(1, 300)
                steps.append((t, TicketChanges(status="resolved")))
            if rng.random() < 0.5:
                t += rng.randint(1, 600)
                steps.append((t, TicketChanges(status="closed")))
    return steps


async def generate(
    pool: db.Pool, n: int, spacing: timedelta = timedelta(minutes=7), per_batch: int = 100
) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    rng = random.Random(5)
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, "rep-b", CUSTOM, ANALYST, T0)
    actions: dict[datetime, list[tuple[TicketCommand, CommandContext]]] = defaultdict(list)
    for b in range(n // per_batch):
        created = T0 + b * spacing
        new = []
        for _ in range(per_batch):
            tid = uuid.UUID(int=rng.getrandbits(128))
            oid = rng.choice(ORGS)
            d = Detection(
                detection_id=str(tid), oid=oid, detection_cat=rng.choice(["psexec", "mimikatz", "dns"]),
                detection_source="s", detection_priority=rng.randint(0, 10), sensor_id=f"s{rng.randint(0, 9)}",
                hostname="h", detected_at=created, source_format="limacharlie",
            )  # fmt: skip
            new.append(NewTicket(tid, oid, rng.choice(["critical", "high", "medium", "low"]), d, ANALYST))
            for minutes, change in plan(rng, tid):
                at = created + timedelta(minutes=(minutes // 10 + 1) * 10)  # ten-minute buckets
                actions[at].append((UpdateTicket(tid, change), ANALYST))
        clock.now = created
        async with pool.acquire() as conn, conn.transaction():
            await open_tickets(conn, handler, new)
        for at in sorted(a for a in actions if a <= created + spacing):
            clock.now = at
            async with pool.acquire() as conn, conn.transaction():
                await handler.execute(conn, actions.pop(at))
    for at in sorted(actions):
        clock.now = at
        async with pool.acquire() as conn, conn.transaction():
            await handler.execute(conn, actions.pop(at))
    for p in all_projections():
        await catch_up(pool, p.name, p.apply, limit=10_000)


async def states_from_log(pool: db.Pool) -> list[TicketState]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT stream_id, data::text FROM events WHERE type <> 'config_updated' ORDER BY position"
        )
    states: dict[uuid.UUID, TicketState] = {}
    for sid, data in rows:
        states[sid] = evolve(states.get(sid), decode_ticket_event(data))
    return list(states.values())


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    rank = p * (len(v) - 1)
    low = int(rank)
    return v[low] + (v[min(low + 1, len(v) - 1)] - v[low]) * (rank - low)


def time_stats(
    pairs: list[tuple[TicketState, datetime | None, str]], configs: dict[str, OrgConfig], now: datetime
) -> dict[str, Any]:
    durations = [(stopped - s.created_at).total_seconds() for s, stopped, _ in pairs if stopped]
    within = measured = 0
    for s, stopped, kind in pairs:
        due = deadline(s.created_at, configs[s.oid].sla_config[s.severity], kind)  # type: ignore[arg-type]
        stop_at = s.status_changed_at if s.status in ("closed", "merged") else now
        if stopped is not None or (stop_at is not None and stop_at > due):
            measured += 1
        if stopped is not None and stopped <= due:
            within += 1
    return {
        "count": len(durations),
        "mean_s": statistics.fmean(durations) if durations else None,
        "median_s": percentile(durations, 0.5),
        "p90_s": percentile(durations, 0.9),
        "within_target": within,
        "measured": measured,
    }


def metrics(group: list[TicketState], configs: dict[str, OrgConfig], now: datetime) -> dict[str, Any]:
    return {
        "total": len(group),
        "true_positives": sum(s.classification == "true_positive" for s in group),
        "false_positives": sum(s.classification == "false_positive" for s in group),
        "pending": sum(s.classification == "pending" for s in group),
        "escalated": sum(s.escalated for s in group),
        "mtta": time_stats([(s, s.acknowledged_at, "mtta") for s in group], configs, now),
        "mttr": time_stats([(s, s.resolved_at, "mttr") for s in group], configs, now),
    }


def expected(states: list[TicketState], configs: dict[str, OrgConfig], now: datetime) -> dict[str, Any]:
    out: dict[str, Any] = {"aggregate": metrics(states, configs, now)}
    for oid in ORGS:
        out[oid] = metrics([s for s in states if s.oid == oid], configs, now)
    for sev in ("critical", "high", "medium", "low"):
        out[f"aggregate/{sev}"] = metrics([s for s in states if s.severity == sev], configs, now)
    return out


def flatten(m: Any) -> dict[str, Any]:
    keep = ("total", "true_positives", "false_positives", "pending", "escalated")
    out = {k: getattr(m, k) for k in keep}
    for clock in ("mtta", "mttr"):
        t = getattr(m, clock)
        out[clock] = {
            k: getattr(t, k) for k in ("count", "mean_s", "median_s", "p90_s", "within_target", "measured")
        }
    return out


def close(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))
    return bool(a == b)


@pytest.mark.timeout(600)
async def test_report_matches_a_plain_python_computation(pool: db.Pool) -> None:
    await generate(pool, 10_000)
    states = await states_from_log(pool)
    assert len(states) == 10_000
    async with pool.acquire() as conn:
        configs = await load_configs(conn, ORGS)
        assert configs["rep-b"].sla_config["high"] == SlaTarget(30, 300)
        assert configs["rep-a"] == DEFAULT_CONFIG
        rows = await reports.summary_rows(conn, configs, T0, T0 + timedelta(days=30), "severity", NOW)
        report = reports.summary_of(configs, T0, T0 + timedelta(days=30), "severity", [rows])
        counts = await reports.dashboard_counts(conn, configs, NOW)
        assert not await counts_drift(conn)  # the trigger-kept counts after thousands of transitions
    want = expected(states, configs, NOW)
    got = {"aggregate": flatten(report.aggregate)} | {oid: flatten(report.orgs[oid]) for oid in ORGS}
    assert report.aggregate.groups is not None
    got |= {f"aggregate/{sev}": flatten(m) for sev, m in report.aggregate.groups.items()}
    for key in want:
        assert close(got[key], want[key]), (key, got[key], want[key])
    # the data set exercises every branch of the definitions
    agg = want["aggregate"]
    assert agg["mtta"]["count"] and agg["mttr"]["count"] and agg["escalated"] and agg["false_positives"]
    assert agg["mtta"]["within_target"] < agg["mtta"]["measured"]
    # dashboard: counts by status and the breaches open at NOW
    assert counts.total.total == 10_000
    by_status: dict[str, int] = defaultdict(int)
    for s in states:
        by_status[s.status] += 1
    assert counts.total.by_status == dict(by_status)
    open_states = [s for s in states if s.status in ("new", "acknowledged", "in_progress", "escalated")]
    mtta_due = sum(
        s.acknowledged_at is None
        and deadline(s.created_at, configs[s.oid].sla_config[s.severity], "mtta") <= NOW
        for s in open_states
    )
    mttr_due = sum(
        s.resolved_at is None and deadline(s.created_at, configs[s.oid].sla_config[s.severity], "mttr") <= NOW
        for s in open_states
    )
    assert (counts.total.sla_breaches.mtta, counts.total.sla_breaches.mttr) == (mtta_due, mttr_due)
    assert sum(c.total for c in counts.orgs.values()) == 10_000


async def test_trend_matches_a_plain_python_computation(pool: db.Pool) -> None:
    """Per day: opened, closed, MTTA and MTTR (median, p90), SLA compliance and the false-positive
    rate, as the trend route answers them, against the same figures computed from the event log."""
    await generate(pool, 1200, spacing=timedelta(hours=3), per_batch=30)  # 40 batches over five days
    states = await states_from_log(pool)
    end = T0 + timedelta(days=7)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, ORGS)
        report = reports.trend_of(
            T0,
            end,
            "day",
            "severity",
            [await reports.trend_rows(conn, configs, T0, end, "day", "severity", NOW)],
        )
    assert [b.start for b in report.buckets] == [T0 + timedelta(days=d) for d in range(7)]
    for b in report.buckets:
        day = [s for s in states if b.start <= s.created_at < b.start + timedelta(days=1)]
        want = metrics(day, configs, NOW)
        closed = sum(
            s.closed_at is not None and b.start <= s.closed_at < b.start + timedelta(days=1) for s in states
        )
        assert (b.opened, b.closed) == (len(day), closed), b.start
        for clock in ("mtta", "mttr"):
            got = {k: getattr(getattr(b, clock), k) for k in want[clock]}
            assert close(got, want[clock]), (b.start, clock, got, want[clock])
        classified = want["true_positives"] + want["false_positives"]
        fp = round(100.0 * want["false_positives"] / classified, 4) if classified else None
        assert b.false_positive_rate_pct == fp and b.false_positives == want["false_positives"]
        assert b.groups is not None and sum(g.opened for g in b.groups.values()) == len(day)
        for sev, g in b.groups.items():
            assert g.opened == sum(s.severity == sev for s in day)
    # the data set has days with tickets, closes after their day, and days with nothing
    assert sum(b.opened for b in report.buckets) == 1200 and report.buckets[-1].opened == 0
    assert any(b.closed and not b.opened for b in report.buckets) or report.buckets[5].closed
    async with pool.acquire() as conn:  # by week, not grouped: the same totals
        weekly = reports.trend_of(
            T0, end, "week", None, [await reports.trend_rows(conn, configs, T0, end, "week", None, NOW)]
        )
    assert [b.groups for b in weekly.buckets] == [None] * len(weekly.buckets)
    assert sum(b.opened for b in weekly.buckets) == 1200 and weekly.buckets[0].start.weekday() == 0
    assert sum(b.closed for b in weekly.buckets) == sum(b.closed for b in report.buckets)
    csv_text = reports.trend_csv(report)
    assert (
        csv_text.splitlines()[0].startswith("bucket,group,opened,closed") and len(csv_text.splitlines()) > 8
    )


async def test_the_trend_route_checks_its_parameters_and_answers_csv(
    pool: db.Pool, tokens: TokenService
) -> None:
    client = await serve(pool, tokens)
    auth = bearer(tokens.mint("lead@x", {"rep-a": ["investigation.get"]}, ttl_s=600))
    base = "/api/v1/reports/trend?oids=rep-a&from=2026-01-01T00:00:00Z&to=2026-01-15T00:00:00Z"
    try:
        r = await client.get(f"{base}&interval=month", headers=auth)
        assert r.status == 422 and (await r.json())["field"] == "interval"
        r = await client.get(
            "/api/v1/reports/trend?oids=rep-a&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", headers=auth
        )
        assert r.status == 422 and (await r.json())["field"] == "from"  # 2,000 days: too many buckets
        r = await client.get(f"{base}&interval=week&format=csv", headers=auth)
        lines = (await r.text()).splitlines()
        assert (
            r.status == 200 and r.content_type == "text/csv" and len(lines) == 1 + 3
        )  # weeks of Dec 29, Jan 5, 12
        assert lines[1].startswith("2025-12-29T00:00:00+00:00,,0,0")
    finally:
        await client.close()
