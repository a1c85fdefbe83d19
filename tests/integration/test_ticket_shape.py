"""One ticket shape: whatever commands a ticket went through, the row the projection keeps is the
row computed from its folded state (projections.ticket_row), and the write side's indexes count
what the state holds. Random command sequences on a real database (hypothesis); the SLA due-time
rule in SQL against domain.sla."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from domain.commands import AddNote, TicketChanges, UnlinkDetection, UpdateTicket
from domain.config import DEFAULT_CONFIG, SlaTarget
from domain.detections import Detection
from domain.errors import DomainError
from domain.intake import Arrival
from domain.lifecycle import OPEN, STATUSES
from domain.sla import deadline
from projections.ticket_row import COLUMNS, TicketRow, ticket_row
from projections.tickets import TicketsProjection
from services.bootstrap import make_handler
from services.commands.envelope import CommandContext
from services.commands.handlers import execute_one
from services.commands.intake import take_in_one
from services.commands.repository import load_states
from services.commands.unit_of_work import retrying
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.ingest.pipeline import RawRecord, ingest_batch
from tests.integration.support import T0, Sink, configure

ANALYST = CommandContext(actor="ana@example.com")
TICKET = st.integers(0, 5)  # the n-th ticket of the org, by number (wrapping)
STEPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("detect"),
            st.integers(0, 7),
            st.sampled_from(["limacharlie", "extrahop"]),
            st.integers(0, 2),
        ),
        st.tuples(st.just("status"), TICKET, st.sampled_from(STATUSES)),
        st.tuples(st.just("assign"), TICKET, st.sampled_from([None, "ana", "bob"])),
        st.tuples(st.just("classify"), TICKET, st.sampled_from(["true_positive", "false_positive"])),
        st.tuples(st.just("escalate"), TICKET, st.sampled_from([None, "tier2"])),
        st.tuples(
            st.just("tags"),
            TICKET,
            st.lists(st.sampled_from(["phish", "Phish", "ÉTÉ", "Straße"]), max_size=3),
        ),
        st.tuples(st.just("texts"), TICKET, st.sampled_from([None, "s1"]), st.sampled_from([None, "c1"])),
        st.tuples(st.just("external"), TICKET, st.sampled_from([None, "TK-1"])),
        st.tuples(st.just("unlink"), TICKET),
        st.tuples(st.just("blank")),  # a ticket without a detection (create_ticket's flat form)
        st.tuples(st.just("link"), TICKET, st.integers(0, 9)),  # a detection linked by hand
        st.tuples(st.just("note"), TICKET),
        st.tuples(st.just("merge"), TICKET, TICKET),
        st.tuples(st.just("split"), TICKET),  # its last detection off into a new ticket
        st.tuples(st.just("wait"), st.integers(1, 600)),
    ),
    min_size=1,
    max_size=25,
)


def detection(n: int, fmt: str, variant: int, at: datetime) -> dict[str, Any]:
    ms = int(at.timestamp() * 1000)
    if fmt == "limacharlie":
        return {"detect_id": f"lc-{n}", "cat": f"cat{n % 2}", "priority": (n * 3 + variant) % 11, "ts": ms,
                "routing": {"sid": f"s{n % 2}", "hostname": "h"}}  # fmt: skip
    return {"id": 1000 + n, "title": f"title {variant % 2}", "description": "d", "type": f"cat{n % 2}",
            "categories": ["sec.lateral", *(["sec.exfil"] if variant else [])], "riskScore": (30, 95, 60)[variant],
            "startTime": ms, "participants": [{"role": "offender", "hostname": f"s{n % 2}"}]}  # fmt: skip


class Run:
    def __init__(self, pool: db.Pool, oid: str) -> None:
        self.pool, self.oid = pool, oid
        self.now = T0
        self.handler = make_handler(lambda: self.now)
        self.offset = 0

    async def tickets(self) -> list[uuid.UUID]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT ticket_id FROM ticket_index WHERE oid = $1 ORDER BY ticket_number", self.oid
            )
        return [r[0] for r in rows]

    async def step(self, step: tuple[Any, ...]) -> None:
        kind, *args = step
        if kind == "wait":
            self.now += timedelta(minutes=args[0])
            return
        if kind == "detect":
            self.offset += 1
            n, fmt, variant = args
            value = json.dumps(detection(n, fmt, variant, self.now - timedelta(minutes=1))).encode()
            record = RawRecord(self.oid, 0, self.offset, self.oid.encode(), value)  # a topic each
            await ingest_batch(self.pool, self.handler, [record], Sink(), default_oid=None)
            return
        if kind == "blank":
            await take_in_one(
                self.pool, self.handler, Arrival(self.oid, "extension", new_ticket_id=uuid.uuid4()), ANALYST
            )
            return
        tickets = await self.tickets()
        if not tickets:
            return
        tid = tickets[args[0] % len(tickets)]
        try:
            if kind == "link":
                d = Detection(
                    f"m-{args[1]}", self.oid, "manual", "manual", args[1], "s", "h", self.now, "manual"
                )
                await take_in_one(self.pool, self.handler, Arrival(self.oid, "link", d, into=tid), ANALYST)
                return
            if kind == "merge":
                other = tickets[args[1] % len(tickets)]
                await retrying(self.pool, lambda conn: self.handler.merge(conn, tid, [other], ANALYST))
                return
            if kind == "split":
                async with self.pool.acquire() as conn:
                    state = (await load_states(conn, [tid]))[tid]
                last = (*state.detections,)[-1:] or ("none",)
                await retrying(
                    self.pool,
                    lambda conn: self.handler.split(conn, tid, last, uuid.uuid4(), ANALYST),
                )
                return
            await execute_one(self.pool, self.handler, await self.command(kind, tid, args), ANALYST)
        except DomainError:
            pass  # refused (an impossible move, a closed ticket): nothing written, as the API would answer

    async def command(self, kind: str, tid: uuid.UUID, args: list[Any]) -> Any:
        changes = {
            "status": lambda: TicketChanges(status=args[1]),
            "assign": lambda: TicketChanges(assignee=args[1]),
            "classify": lambda: TicketChanges(classification=args[1]),
            "escalate": lambda: TicketChanges(escalation_group=args[1]),
            "tags": lambda: TicketChanges(tags=args[1]),
            "texts": lambda: TicketChanges(summary=args[1], conclusion=args[2]),
            "external": lambda: TicketChanges(external_ticket_id=args[1]),
        }
        if kind in changes:
            return UpdateTicket(tid, changes[kind]())
        if kind == "note":
            return AddNote(tid, uuid.uuid4(), "looked at it")
        async with self.pool.acquire() as conn:
            state = (await load_states(conn, [tid]))[tid]
        return UnlinkDetection(tid, next(iter(state.detections), "none"))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS)
@example(steps=[("blank",), ("link", 0, 3)])  # a ticket opened without a detection takes its first linked one
@example(steps=[("blank",), ("detect", 1, "limacharlie", 0), ("merge", 0, 1)])  # or its first merged one
async def test_the_projected_row_is_the_row_of_the_folded_state(
    pool: db.Pool, steps: list[tuple[Any, ...]]
) -> None:
    oid = f"shape-{uuid.uuid4().hex[:8]}"  # one database for every example: an org each
    # The org's own grouping, a sliding rule for cat0, and a recurrence opens a linked ticket.
    rule = {"name": "cat0", "match": {"category": "cat0"}, "key": ["category"], "window": "sliding",
            "window_minutes": 20, "max_span_minutes": 90, "max_detections": 4}  # fmt: skip
    await configure(
        pool, oid, auto_grouping_enabled=True, grouping_window_minutes=30, grouping_max_detections=3,
        grouping_rules=[rule], recurrence={"policy": "link", "window_minutes": 120},
    )  # fmt: skip
    run = Run(pool, oid)
    for step in steps:
        await run.step(step)
        await run.step(("wait", 1))
    projection = TicketsProjection()
    await catch_up(pool, projection.name, projection.apply)
    async with pool.acquire() as conn:
        ids = await run.tickets()
        states = await load_states(conn, ids)  # folded from the store, no cache
        rows = await conn.fetch(f"SELECT {', '.join(COLUMNS)} FROM tickets WHERE oid = $1", oid)
        groups = await conn.fetch(
            "SELECT ticket_id, detection_count, open, resolved_at FROM grouping_index WHERE oid = $1", oid
        )
        claims = await conn.fetch("SELECT detection_id, ticket_id FROM detection_index WHERE oid = $1", oid)
    projected = {r["ticket_id"]: TicketRow(**dict(r)) for r in rows}
    folded = {tid: ticket_row(s, DEFAULT_CONFIG.sla_config) for tid, s in states.items()}
    for tid in projected.keys() & folded.keys():
        a, b = msgspec.structs.asdict(projected[tid]), msgspec.structs.asdict(folded[tid])
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert projected == folded
    for g in groups:
        s = states[g["ticket_id"]]
        resolved = s.status_changed_at if s.status == "resolved" else None
        assert (g["detection_count"], g["open"], g["resolved_at"]) == (
            s.detection_count,
            s.status in OPEN,
            resolved,
        )
    held = {d: s.ticket_id for s in states.values() if s.status != "merged" for d in s.detections}
    assert {r["detection_id"]: r["ticket_id"] for r in claims} == held


async def test_the_tickets_table_has_the_rows_columns(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tickets' AND is_generated = 'NEVER'"
        )
    assert {r[0] for r in columns} == set(COLUMNS), "a column the ticket row does not compute"


async def test_the_sla_due_time_in_sql_is_domain_sla(pool: db.Pool) -> None:
    starts = [datetime(2026, 3, 29, 0, 59, tzinfo=UTC), datetime(2024, 2, 28, 23, 0, tzinfo=UTC), T0]
    minutes = [1, 15, 59, 60, 61, 240, 1440, 10_080, 43_200]
    async with pool.acquire() as conn:
        await conn.execute("SET TIME ZONE 'Europe/Berlin'")  # a zone with a DST change in the range
        for start in starts:
            for m in minutes:
                target = SlaTarget(mtta_minutes=m, mttr_minutes=m)
                due = await conn.fetchval("SELECT ticketing_sla_due($1, $2)", start, m)
                assert due == deadline(start, target, "mtta"), (start, m)
                assert await conn.fetchval("SELECT ticketing_sla_started_by($1, $2)", due, m) == start
