"""The scheduler: SLA clocks and escalation policies on time, and auto-close of long-resolved tickets.

Each tick asks the read model which tickets *may* be due, then lets the aggregate decide on its
own state (the read model may lag a few milliseconds: a ticket acknowledged a moment ago is
refused by `decide`, and a breach already recorded records nothing). The clock is injected, so
tests run it in simulated time.
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import msgspec

from domain.commands import AutoClose, CheckEscalation, CheckSla, TicketCommand
from domain.config import OrgConfig
from domain.errors import DomainError
from domain.events import Closed, EscalationStepTaken, SlaAtRisk, SlaBreached, TicketEvent
from projections.reports import OPEN_SQL, sla_targets
from services import metrics
from services.commands.configs import load_configs
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler, execute_together
from services.eventstore import db, locks
from services.eventstore.postgres import UNAVAILABLE
from services.evidence.store import EvidenceStore
from services.outages import describe, until_available
from services.scheduler.retention import RETENTION_BATCH, run_retention

log = logging.getLogger(__name__)

SYSTEM = CommandContext(actor="system", correlation_id="scheduler")
ESCALATION = CommandContext(actor="system:escalation", correlation_id="scheduler")
TICK_BATCH = 500  # due commands per transaction


class TickResult(msgspec.Struct):
    breaches: int = 0
    at_risk: int = 0
    escalation_steps: int = 0
    closed: int = 0


async def _orgs(conn: db.Connection) -> dict[str, OrgConfig]:
    oids = [r[0] for r in await conn.fetch("SELECT oid FROM ticket_numbers")]
    return await load_configs(conn, oids)


async def _sla_checks(conn: db.Connection, configs: dict[str, OrgConfig], now: datetime) -> list[CheckSla]:
    """Open tickets with an unacknowledged or unresolved clock past its at-risk share or its
    deadline, not yet recorded."""
    oids, severities, mtta, mttr, percent = sla_targets(configs)
    if not oids:
        return []
    # Every second: one index-only range per (org, severity), of the open tickets older than the
    # shorter at-risk share (LATERAL with ORDER BY is never flattened into a join; as a join the
    # planner read every open ticket's heap page per tick). A clock is due for the check once it
    # has used its share (`risk`, in seconds) and has not been found at risk, or once it is past
    # its deadline and has not been found breached.
    rows = await conn.fetch(
        "SELECT t.ticket_id, c.oid FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $6::int[])"
        " AS c(oid, severity, mtta, mttr, pct)"
        " CROSS JOIN LATERAL (SELECT ticket_id FROM tickets t"
        f" WHERE t.oid = c.oid AND t.severity = c.severity AND t.status IN {OPEN_SQL}"
        "   AND t.created_at <= ticketing_sla_at_risk_by($5::timestamptz, least(c.mtta, c.mttr), c.pct)"
        "   AND ((t.acknowledged_at IS NULL AND t.mtta_breached_at IS NULL AND t.created_at <= CASE"
        "       WHEN t.mtta_at_risk_at IS NULL THEN ticketing_sla_at_risk_by($5::timestamptz, c.mtta, c.pct)"
        "         ELSE ticketing_sla_started_by($5::timestamptz, c.mtta) END)"
        "     OR (t.resolved_at IS NULL AND t.mttr_breached_at IS NULL AND t.created_at <= CASE"
        "       WHEN t.mttr_at_risk_at IS NULL THEN ticketing_sla_at_risk_by($5::timestamptz, c.mttr, c.pct)"
        "         ELSE ticketing_sla_started_by($5::timestamptz, c.mttr) END))"
        " ORDER BY t.created_at) AS t",
        oids, severities, mtta, mttr, now, percent,
    )  # fmt: skip
    return [CheckSla(r[0], configs[r[1]].sla_config, configs[r[1]].sla_at_risk_percent) for r in rows]


async def _escalation_checks(
    conn: db.Connection, configs: dict[str, OrgConfig], now: datetime
) -> list[CheckEscalation]:
    """Unacknowledged tickets with a step of their policy due and not taken: per (org, severity,
    step), one index-only range of tickets_unacknowledged older than the step's time."""
    steps = [
        (oid, severity, number, now - timedelta(minutes=step.after_minutes))
        for oid, c in configs.items()
        for severity, policy in c.escalation_policies.items()
        for number, step in enumerate(policy, start=1)
    ]
    if not steps:
        return []
    oids, severities, numbers, cutoffs = (list(x) for x in zip(*steps, strict=True))
    rows = await conn.fetch(
        "SELECT DISTINCT t.ticket_id, c.oid, c.severity"
        " FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[]) AS c(oid, severity, step, cutoff)"
        " CROSS JOIN LATERAL (SELECT ticket_id FROM tickets t WHERE t.oid = c.oid AND t.severity = c.severity"
        "   AND t.acknowledged_at IS NULL AND t.status IN ('new', 'escalated')"
        "   AND t.created_at <= c.cutoff AND t.escalation_steps < c.step ORDER BY t.created_at) AS t",
        oids, severities, numbers, cutoffs,
    )  # fmt: skip
    return [CheckEscalation(r[0], configs[r[1]].escalation_policies[r[2]]) for r in rows]


async def _auto_closes(conn: db.Connection, configs: dict[str, OrgConfig], now: datetime) -> list[AutoClose]:
    days = {
        oid: c.auto_close_resolved_after_days
        for oid, c in configs.items()
        if c.auto_close_resolved_after_days
    }
    if not days:
        return []
    # Every second: only the due part of each org's range of resolved tickets (as a join, every
    # resolved ticket was read per tick).
    rows = await conn.fetch(
        "SELECT t.ticket_id, c.days"
        " FROM unnest($1::text[], $2::int[], $3::timestamptz[]) AS c(oid, days, cutoff)"
        " CROSS JOIN LATERAL (SELECT ticket_id FROM tickets t WHERE t.oid = c.oid AND t.status = 'resolved'"
        " AND t.status_changed_at <= c.cutoff ORDER BY t.status_changed_at) AS t",
        list(days),
        list(days.values()),
        [now - timedelta(days=d) for d in days.values()],
    )
    return [AutoClose(r[0], r[1]) for r in rows]


async def tick(pool: db.Pool, handler: CommandHandler) -> TickResult:
    now = handler.clock()
    async with pool.acquire() as conn:
        configs = await _orgs(conn)
        commands: list[TicketCommand] = [
            *await _sla_checks(conn, configs, now),
            *await _auto_closes(conn, configs, now),
        ]
        escalations = await _escalation_checks(conn, configs, now)
    result = TickResult()
    due: list[tuple[CommandContext, Sequence[TicketCommand]]] = [
        (SYSTEM, commands[i : i + TICK_BATCH]) for i in range(0, len(commands), TICK_BATCH)
    ]
    due += [(ESCALATION, escalations[i : i + TICK_BATCH]) for i in range(0, len(escalations), TICK_BATCH)]
    for ctx, batch in due:
        for event in await _execute_due(pool, handler, batch, ctx):
            if isinstance(event, SlaBreached):
                result.breaches += 1
                metrics.SLA_BREACHES.labels(event.kind).inc()
            elif isinstance(event, SlaAtRisk):
                result.at_risk += 1
                metrics.SLA_AT_RISK.labels(event.kind).inc()
            elif isinstance(event, EscalationStepTaken):
                result.escalation_steps += 1
                metrics.ESCALATION_STEPS.inc()
            elif isinstance(event, Closed):
                result.closed += 1
                metrics.AUTO_CLOSED.inc()
    return result


async def _execute_due(
    pool: db.Pool, handler: CommandHandler, commands: Sequence[TicketCommand], ctx: CommandContext
) -> list[TicketEvent]:
    """Due commands in one transaction (when the first SLA deadlines of a busy hour pass, thousands
    fall due in the same second: one transaction each managed ~225 a second). A command the
    aggregate refuses (its ticket archived meanwhile, say), or a batch that keeps losing the race
    for one of its tickets, fails the whole batch: then each runs alone, and one that still fails
    is logged and left to the next tick instead of stopping the scheduler."""
    try:
        return (await execute_together(pool, handler, commands, ctx)).events
    except DomainError as exc:
        if len(commands) == 1:
            log.warning(
                "scheduler: ticket %s skipped this tick (%s: %s)",
                commands[0].ticket_id,
                type(exc).__name__,
                exc,
            )
            return []
    return [event for command in commands for event in await _execute_due(pool, handler, [command], ctx)]


async def run_scheduler(
    pool: db.Pool,
    handler: CommandHandler,
    stop: asyncio.Event,
    archive_dir: Path,
    every_s: float = 1.0,
    retention_every_s: float = 60.0,
    retention_batch: int = RETENTION_BATCH,
    evidence: EvidenceStore | None = None,
) -> None:
    """One active scheduler at a time (a session advisory lock); others wait to take over. A
    database restart ends the leader's session and its lock with it: the scheduler then competes
    for the lock again instead of ticking on without it."""
    await until_available(
        lambda: _lead(
            pool, handler, stop, archive_dir, every_s, retention_every_s, retention_batch, evidence
        ),
        UNAVAILABLE,
        "scheduler: database",
        stop,
    )


async def _lead(
    pool: db.Pool,
    handler: CommandHandler,
    stop: asyncio.Event,
    archive_dir: Path,
    every_s: float,
    retention_every_s: float,
    retention_batch: int,
    evidence: EvidenceStore | None,
) -> None:
    async with pool.acquire() as leader:
        while not stop.is_set() and not await leader.fetchval(
            "SELECT pg_try_advisory_lock($1)", locks.SCHEDULER_LEADER
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 5)
        try:
            next_retention = 0.0
            while not stop.is_set():
                await leader.execute("SELECT 1")  # still the leader: its session (and lock) lives
                try:
                    result = await tick(pool, handler)
                    if asyncio.get_running_loop().time() >= next_retention:
                        async with pool.acquire() as conn:
                            configs = await _orgs(conn)
                        next_retention = asyncio.get_running_loop().time() + retention_every_s
                        try:
                            archived = await run_retention(
                                pool, configs, archive_dir, handler.clock(), retention_batch, evidence
                            )
                        except Exception:  # a full disk, say: SLA clocks must not stop for it
                            log.exception("retention: pass failed; next try in %.0f s", retention_every_s)
                        else:
                            if archived >= retention_batch:  # more may be due: after the next tick
                                next_retention = asyncio.get_running_loop().time()
                    if result.breaches or result.at_risk or result.escalation_steps or result.closed:
                        log.info(
                            "scheduler: %d SLA breaches recorded, %d clocks at risk, %d escalation steps"
                            " taken, %d tickets auto-closed",
                            result.breaches,
                            result.at_risk,
                            result.escalation_steps,
                            result.closed,
                        )
                except UNAVAILABLE as exc:
                    log.warning("scheduler: database unavailable (%s)", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
        finally:
            with contextlib.suppress(Exception):
                await leader.execute("SELECT pg_advisory_unlock($1)", locks.SCHEDULER_LEADER)
