"""The one intake service: every door's detections (the Kafka ingest, the extension's create_ticket,
the create-issue door, a link by hand) are taken in here, in the caller's transaction.

It reads the facts the plan needs inside that transaction (how far each partition was read, the
orgs' tombstones and configurations, the claims of the detection ids and the open groups, after
locking the group keys), runs the domain's plan, numbers the new tickets and appends.
"""

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import msgspec

from domain import intake
from domain.commands import TicketChanges, TicketCommand, UpdateTicket
from domain.config import OrgConfig
from domain.errors import (
    ConcurrencyError,
    DetectionAlreadyLinked,
    DetectionSuppressed,
    OrgUnsubscribed,
    TicketAlreadyExists,
)
from domain.grouping import GroupCandidate, Keying
from domain.intake import Arrival, Facts, Fate, Tombstone
from domain.routing import ROUTING_ACTOR, Board, assign_openings
from services.commands.configs import load_configs
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler, Outcome
from services.commands.indexes import allocate_ticket_numbers, claimed_detections
from services.commands.repository import ticket_numbers
from services.commands.routing import load_boards, save_turns
from services.commands.suppressions import active_suppressions, record_held
from services.commands.unit_of_work import lock_groups, lock_tickets, retrying
from services.eventstore import db

INGEST_ACTOR = "system:ingest"
# What a writer that took in the same detection at the same moment leaves the loser with: reading
# again finds its claim (or its ticket) and decides from there.
RACES = (ConcurrencyError, DetectionAlreadyLinked, TicketAlreadyExists)
COUNTING = CommandContext(actor=INGEST_ACTOR)


class Intake(NamedTuple):
    fates: list[Fate]
    outcome: Outcome
    configs: dict[str, OrgConfig]  # of the batch's orgs, as read in its transaction


async def load_tombstones(conn: db.Connection, oids: Sequence[str]) -> dict[str, Tombstone]:
    rows = await conn.fetch(
        "SELECT oid, requested_at, resubscribed_at FROM org_tombstones WHERE oid = ANY($1::text[])",
        list(oids),
    )
    return {r[0]: Tombstone(r[1], r[2]) for r in rows}


async def take_in(
    conn: db.Connection,
    handler: CommandHandler,
    arrivals: Sequence[Arrival],
    context: Callable[[int], CommandContext],
) -> Intake:
    """Each arrival's fate, decided and written in the caller's transaction (retry it on RACES: a
    concurrent writer got there first). `context` gives the command context of the arrival at an
    index (asked only for those that write)."""
    oids = sorted({a.oid for a in arrivals})
    now = handler.clock()
    read = await _read_offsets(conn, arrivals)
    tombstones = await load_tombstones(conn, oids)
    configs = await load_configs(conn, oids)
    keys = intake.group_keys(arrivals, configs)
    await lock_groups(
        conn, sorted({(a.oid, k.key) for a, k in zip(arrivals, keys, strict=True) if k is not None})
    )
    await lock_tickets(conn, [a.into for a in arrivals if a.into is not None])
    detections = list({(a.oid, a.detection.detection_id) for a in arrivals if a.detection is not None})
    claims = await claimed_detections(conn, detections)  # after the locks: sees a racing writer's work
    candidates = await _candidates(conn, arrivals, keys, claims, configs)
    suppressions = await active_suppressions(conn, oids, now)
    facts = Facts(configs, tombstones, claims, candidates, read, suppressions=suppressions, now=now)
    plan = intake.plan(arrivals, keys, facts)
    await _advance(conn, arrivals, read)
    opening = intake.tickets_per_org(plan)
    numbers = await allocate_ticket_numbers(conn, opening)  # each org's row locked to commit
    again = await load_tombstones(conn, list(opening)) if opening else {}
    if any(tombstones.get(oid) != stone for oid, stone in again.items()):
        # Unsubscribed (or purged again) since the first read. Read again now that the rows are
        # locked: a purge that commits its tombstone after this read waits for this transaction
        # before it sweeps the org's tickets (it locks the same row), so no ticket of ours can
        # outlive it.
        raise ConcurrencyError("an org of the batch was unsubscribed meanwhile")
    if plan.suppressed:
        await record_held(conn, plan.suppressed, COUNTING, now)
    boards = await load_boards(conn, configs, opening) if opening else {}
    while True:
        commands = intake.commands(plan, numbers, now)
        if not commands:
            return Intake(plan.fates, Outcome({}, []), configs)
        moved = {oid: Board(dict(b.turns), dict(b.loads), b.away) for oid, b in boards.items()}
        routed = _routed(plan, arrivals, configs, moved, now)
        try:
            outcome = await handler.execute(
                conn,
                [(c, COUNTING if at is None else context(at)) for at, c in commands]
                + [(c, msgspec.structs.replace(context(at), actor=ROUTING_ACTOR)) for at, c in routed],
            )
            await save_turns(conn, {oid: b.turns for oid, b in boards.items()}, moved)
        except TicketAlreadyExists as exc:
            # Nothing is written yet: the decision failed before it. Either a racing writer opened
            # this detection's ticket (raise: the retry reads its claim), or the ticket exists
            # without it (unlinked since): decide again with that id taken (as many openings).
            await _taken(conn, plan, exc)
            facts.taken = facts.taken | {exc.ticket_id}
            plan = intake.plan(arrivals, keys, facts)
            continue
        return Intake(plan.fates, outcome, configs)


def _routed(
    plan: intake.Plan,
    arrivals: Sequence[Arrival],
    configs: dict[str, OrgConfig],
    boards: dict[str, Board],
    now: datetime,
) -> list[tuple[int, TicketCommand]]:
    """An assignment, by the org's routing, for each new ticket its door did not assign."""
    new = [
        (o.at, o.oid, o.severity, o.detection.detection_cat if o.detection else None)
        for o in plan.openings
        if arrivals[o.at].assignee is None and o.oid in boards
    ]
    tickets = {o.at: o.ticket_id for o in plan.openings}
    routings = {oid: configs[oid].routing for oid in boards}
    return [
        (at, UpdateTicket(tickets[at], TicketChanges(assignee=analyst)))
        for at, analyst in assign_openings(new, routings, boards, now)
    ]


async def _taken(conn: db.Connection, plan: intake.Plan, exc: TicketAlreadyExists) -> None:
    """Raise `exc` again unless its ticket is one this plan opens for a detection nobody holds."""
    opening = next((o for o in plan.openings if o.ticket_id == exc.ticket_id), None)
    if opening is None or opening.detection is None:
        raise exc
    key = (opening.oid, opening.detection.detection_id)
    if await claimed_detections(conn, [key]):
        raise exc


class Answer(NamedTuple):
    """What an API door tells its caller of its one arrival."""

    fate: Fate
    ticket_id: UUID
    ticket_number: int
    outcome: Outcome
    config: OrgConfig  # the org's, as the intake read it


async def take_in_one(
    pool: db.Pool, handler: CommandHandler, arrival: Arrival, ctx: CommandContext
) -> Answer:
    """One arrival through an API door, in a transaction of its own, tried again from a fresh read
    when a concurrent writer got there first (the same detection through another door at the same
    moment: the retry answers its ticket). A refusal raises: the org was unsubscribed
    (OrgUnsubscribed), the detection is on another ticket (DetectionAlreadyLinked)."""

    async def work(conn: db.Connection) -> Answer | Fate:
        [fate], outcome, configs = await take_in(conn, handler, [arrival], lambda _: ctx)
        if fate.refusal is not None or fate.ticket_id is None:  # refused, dropped or held: no ticket
            return fate
        state = outcome.states.get(fate.ticket_id)
        number = (
            state.ticket_number if state else (await ticket_numbers(conn, [fate.ticket_id]))[fate.ticket_id]
        )
        return Answer(fate, fate.ticket_id, number, outcome, configs[arrival.oid])

    answer = await retrying(pool, work, retry_on=RACES)
    if isinstance(answer, Answer):
        return answer
    if answer.refusal == "unsubscribed" or answer.kind == "dropped":
        raise OrgUnsubscribed(arrival.oid, answer.reason or "")
    assert arrival.detection is not None
    if answer.kind == "suppressed":
        assert answer.held_by is not None
        raise DetectionSuppressed(arrival.detection.detection_id, answer.held_by, answer.reason or "")
    raise DetectionAlreadyLinked(arrival.oid, arrival.detection.detection_id)


async def _read_offsets(conn: db.Connection, arrivals: Sequence[Arrival]) -> dict[tuple[str, int], int]:
    """How far the ingest had read each partition of the batch: a message at or before that offset
    was ingested already (a redelivery after a crash, a replay by a new consumer group). The rows
    stay locked until the batch commits, taken in order before any other lock of the batch, so a
    batch and a stale copy of it (the previous owner of a partition after a rebalance) are decided
    one after the other."""
    partitions = sorted({(a.position[0], a.position[1]) for a in arrivals if a.position is not None})
    if not partitions:
        return {}
    rows = await conn.fetch(
        "INSERT INTO ingest_read_offsets (topic, partition, read_offset)"
        " SELECT t, p, -1 FROM unnest($1::text[], $2::int[]) AS u(t, p)"
        " ON CONFLICT (topic, partition) DO UPDATE SET read_offset = ingest_read_offsets.read_offset"
        " RETURNING topic, partition, read_offset",
        [t for t, _ in partitions],
        [p for _, p in partitions],
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def _advance(
    conn: db.Connection, arrivals: Sequence[Arrival], read: dict[tuple[str, int], int]
) -> None:
    ends = dict(read)
    for a in arrivals:
        if a.position is not None:
            topic, partition, offset = a.position
            ends[(topic, partition)] = max(ends[(topic, partition)], offset)
    moved = [(t, p, end) for (t, p), end in ends.items() if end > read[(t, p)]]
    if moved:
        await conn.executemany(
            "UPDATE ingest_read_offsets SET read_offset = $3 WHERE topic = $1 AND partition = $2", moved
        )


async def _candidates(
    conn: db.Connection,
    arrivals: Sequence[Arrival],
    keys: Sequence[Keying | None],
    claims: dict[tuple[str, str], intake.Claim],
    configs: dict[str, OrgConfig],
) -> dict[tuple[str, str], list[GroupCandidate]]:
    """The open tickets the batch's new detections could join, within the longest span of their
    windows, and (for orgs that follow recurrences) the resolved ones they could recur on."""
    fresh = [
        (a.oid, k, a.detection.detected_at)
        for a, k in zip(arrivals, keys, strict=True)
        if k is not None and a.detection is not None and (a.oid, a.detection.detection_id) not in claims
    ]
    if not fresh:
        return {}
    grouping = sorted({(oid, k.key) for oid, k, _ in fresh if k.joins})
    times: list[datetime] = [t for _, _, t in fresh]
    found: dict[tuple[str, str], list[GroupCandidate]] = {}
    if grouping:
        since = min(times) - intake.lookback([k for _, k, _ in fresh])
        found = await group_candidates(conn, grouping, since, max(times))
    recurring = sorted({(oid, k.key) for oid, k, _ in fresh if configs[oid].recurrence.policy != "off"})
    if recurring:
        window = timedelta(minutes=max(configs[oid].recurrence.window_minutes for oid, _ in recurring))
        resolved = await group_candidates(conn, recurring, min(times) - window, max(times), resolved=True)
        for key, tickets in resolved.items():
            found.setdefault(key, []).extend(tickets)
    return found


# The groups of (org, key) pairs as a range scan of a grouping_index index per pair (LATERAL with
# ORDER BY is never flattened into a join that could hash the whole index; see claimed_detections).
# The indexes hold the key's first 256 characters (migrations 0012 and 0028).
_GROUPS = (
    "SELECT k.oid, k.group_key, g.ticket_id, g.first_detected_at, g.detection_count, g.last_detected_at,"
    " g.resolved_at, {number} FROM unnest($1::text[], $2::text[]) AS k(oid, group_key)"
    " CROSS JOIN LATERAL (SELECT * FROM grouping_index WHERE {where} AND oid = k.oid"
    " AND left(group_key, 256) = left(k.group_key, 256) AND group_key = k.group_key"
    " ORDER BY {order}) AS g{join}"
)
_OPEN = _GROUPS.format(
    number="NULL::int", where="open AND first_detected_at > $3 AND first_detected_at <= $4",
    order="first_detected_at", join="",
)  # fmt: skip
_RESOLVED = _GROUPS.format(
    number="i.ticket_number", where="resolved_at > $3 AND resolved_at <= $4", order="resolved_at",
    join=" JOIN ticket_index i ON i.ticket_id = g.ticket_id",
)  # fmt: skip


async def group_candidates(
    conn: db.Connection,
    keys: list[tuple[str, str]],
    since: datetime,
    until: datetime,
    *,
    resolved: bool = False,
) -> dict[tuple[str, str], list[GroupCandidate]]:
    """The open tickets of these groups whose first detection is after `since` and by `until`;
    with `resolved`, the tickets resolved in that time instead (a recurrence may reopen one or
    link to it), with their numbers."""
    sql = _RESOLVED if resolved else _OPEN
    rows = await conn.fetch(sql, [k[0] for k in keys], [k[1] for k in keys], since, until)
    found: dict[tuple[str, str], list[GroupCandidate]] = {}
    for r in rows:
        found.setdefault((r[0], r[1]), []).append(GroupCandidate(r[2], r[3], r[4], r[5], r[6], r[7]))
    return found
