"""The command handler: the only code that appends events. Shared by ingest, API and scheduler.

It loads the streams a batch of commands touches, folds them into state, asks the domain to
decide, keeps the write-side indexes (ticket numbers, detection ownership) and appends, all in
the caller's transaction, so a retry after any failure starts from a clean slate.
"""

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
import msgspec

from domain.commands import OpenTicket, TicketCommand
from domain.detections import Detection
from domain.errors import ConcurrencyError, DetectionAlreadyLinked, TicketNotFound
from domain.events import (
    DetectionAdded,
    DetectionRemoved,
    MergedFrom,
    MergedInto,
    StatusChanged,
    TicketCreated,
    TicketEvent,
    decode_ticket_event,
    encode_event,
    event_type,
)
from domain.lifecycle import OPEN
from domain.severity import Severity
from domain.ticket import TicketState, UnreadCommand, decide, decide_unread, evolve, plan_merge
from services.commands.state_cache import StateCache
from services.eventstore import postgres as store
from services.eventstore.event_ids import new_event_id

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
T = TypeVar("T")

# Tickets born from a detection get an id derived from (org, detection id): a replay or a second
# worker computes the same id, which keeps every effect idempotent and runs comparable.
TICKET_NAMESPACE = UUID("5b0c4b7e-4d1a-4f53-9a43-2f1e7c3b9d10")


def ticket_id_for_detection(oid: str, detection_id: str) -> UUID:
    return uuid.uuid5(TICKET_NAMESPACE, f"{oid}\x1f{detection_id}")


class Outcome(msgspec.Struct):
    states: dict[UUID, TicketState]
    events: list[TicketEvent]


class CommandContext(msgspec.Struct, frozen=True):
    """Who asked and why; stored as event metadata (the audit trail's `by`)."""

    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None
    # Where the detection was read (topic, partition, offset), which the dedup index keeps with
    # the claim. Not stored in the event.
    read_at: tuple[str, int, int] | None = None


async def allocate_ticket_numbers(conn: asyncpg.Connection, counts: Counter[str]) -> dict[str, list[int]]:
    """Reserve consecutive numbers per org. Orgs are locked in sorted order so workers never deadlock."""
    numbers: dict[str, list[int]] = {}
    for oid in sorted(counts):
        n = counts[oid]
        last: int = await conn.fetchval(
            "INSERT INTO ticket_numbers (oid, last_number) VALUES ($1, $2)"
            " ON CONFLICT (oid) DO UPDATE SET last_number = ticket_numbers.last_number + EXCLUDED.last_number"
            " RETURNING last_number",
            oid,
            n,
        )
        numbers[oid] = list(range(last - n + 1, last + 1))
    return numbers


class NewTicket(msgspec.Struct, frozen=True):
    ticket_id: UUID
    oid: str
    severity: Severity
    detection: Detection | None
    ctx: CommandContext
    group_key: str | None = None
    continues_ticket_id: UUID | None = None


async def claimed_detections(
    conn: asyncpg.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], UUID]:
    """(oid, detection id) -> the ticket holding it, for the keys that already belong to one."""
    if not keys:
        return {}
    # One key probe per detection, kept apart by LATERAL ... LIMIT (which the planner cannot
    # flatten into a join). As a plain join it hashed the whole index per batch.
    rows = await conn.fetch(
        "SELECT b.oid, b.detection_id, i.ticket_id"
        " FROM unnest($1::text[], $2::text[]) AS b(oid, detection_id)"
        " CROSS JOIN LATERAL (SELECT ticket_id"
        " FROM detection_index WHERE oid = b.oid AND detection_id = b.detection_id LIMIT 1) AS i",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def open_ticket_once(
    conn: asyncpg.Connection,
    handler: "CommandHandler",
    new: NewTicket,
    then: Sequence[TicketCommand] = (),
) -> tuple[UUID, int, bool]:
    """The ticket that already holds `new.detection` in its org (the same detection sent again,
    through any door), else `new` created, with `then` in the same decision; (id, number, created)."""
    if new.detection is not None:
        key = (new.oid, new.detection.detection_id)
        owner = (await claimed_detections(conn, [key])).get(key)
        if owner is not None:
            number: int = await conn.fetchval(
                "SELECT ticket_number FROM ticket_index WHERE ticket_id = $1", owner
            )
            return owner, number, False
    outcome = await open_tickets(conn, handler, [new], [(c, new.ctx) for c in then])
    return new.ticket_id, outcome.states[new.ticket_id].ticket_number, True


async def open_tickets(
    conn: asyncpg.Connection,
    handler: "CommandHandler",
    new: Sequence[NewTicket],
    then: Sequence[tuple[TicketCommand, CommandContext]] = (),
) -> Outcome:
    """Number and create tickets in the caller's transaction (ingest, extension requests), then run
    `then` (detections grouped into them or into older tickets) in the same decision."""
    allocated = await allocate_ticket_numbers(conn, Counter(t.oid for t in new))
    numbers = {oid: iter(n) for oid, n in allocated.items()}
    commands: list[tuple[TicketCommand, CommandContext]] = [
        (
            OpenTicket(
                t.ticket_id,
                t.oid,
                next(numbers[t.oid]),
                t.severity,
                t.detection,
                t.group_key,
                t.continues_ticket_id,
            ),
            t.ctx,
        )
        for t in new
    ]
    return await handler.execute(conn, [*commands, *then])


async def load_states(
    conn: asyncpg.Connection, ids: Sequence[UUID], cache: StateCache | None = None
) -> dict[UUID, TicketState]:
    """The current state of each existing stream; with a cache, only events after its entry are
    read (plus the entry's own last event, to check it is still the store's)."""
    wanted = set(ids)
    cached = {sid: hit for sid in wanted if cache is not None and (hit := cache.get(sid)) is not None}
    first = {sid: cached[sid].state.version if sid in cached else 1 for sid in wanted}
    states: dict[UUID, TicketState] = {}
    for stream_id, recorded in (await store.read_streams(conn, first)).items():
        state: TicketState | None = None
        hit = cached.get(stream_id)
        if hit is not None:
            if recorded[0].event_id != hit.last_event_id:
                continue  # not the store's any more: read again from the start, below
            state, recorded = hit.state, recorded[1:]
        for r in recorded:
            state = evolve(state, decode_ticket_event(r.data))
        assert state is not None
        states[stream_id] = state
        if cache is not None and recorded:
            cache.put(state, recorded[-1].event_id)
    stale = [sid for sid in cached if sid not in states]  # another last event, or the stream is gone
    if stale:
        assert cache is not None
        for sid in stale:
            cache.drop(sid)
        states.update(await load_states(conn, stale, cache))
    return states


class _IndexChanges:
    """Write-side index rows implied by a batch of events, applied before the append."""

    def __init__(self) -> None:
        self.numbers: list[tuple[str, int, UUID]] = []
        # detection -> ticket (and where it was read), must be unclaimed
        self.claims: list[tuple[str, str, UUID, tuple[str, int, int] | None]] = []
        self.releases: list[tuple[str, str, UUID]] = []
        self.moves: list[tuple[str, str, UUID]] = []  # merge: detection now owned by the target
        self.new_groups: dict[UUID, list[Any]] = {}  # ticket -> grouping_index row of a new ticket
        self.group_counts: dict[UUID, int] = {}  # ticket -> change of its detection count
        self.group_open: dict[UUID, bool] = {}  # ticket -> whether it still collects detections

    def add(self, event: TicketEvent, state: TicketState, ctx: CommandContext) -> None:
        tid = state.ticket_id
        match event:
            case TicketCreated():
                self.numbers.append((state.oid, state.ticket_number, tid))
                if event.detection is not None:
                    self.claims.append((state.oid, event.detection.detection_id, tid, ctx.read_at))
                    if event.group_key is not None:
                        self.new_groups[tid] = [
                            tid,
                            state.oid,
                            event.group_key,
                            event.detection.detected_at,
                            1,
                            True,
                        ]
            case DetectionAdded():
                self.claims.append((state.oid, event.detection.detection_id, tid, ctx.read_at))
                self._count(tid, 1)
            case DetectionRemoved():
                self.releases.append((state.oid, event.detection_id, tid))
                self._count(tid, -1)
            case MergedFrom():
                self.moves.extend((state.oid, d.detection_id, tid) for d in event.detections)
                self._count(tid, len(event.detections))
            case StatusChanged() | MergedInto():
                self._open(tid, state.status in OPEN)

    def _count(self, tid: UUID, delta: int) -> None:
        if tid in self.new_groups:
            self.new_groups[tid][4] += delta
        else:
            self.group_counts[tid] = self.group_counts.get(tid, 0) + delta

    def _open(self, tid: UUID, is_open: bool) -> None:
        if tid in self.new_groups:
            self.new_groups[tid][5] = is_open
        else:
            self.group_open[tid] = is_open

    async def write(self, conn: asyncpg.Connection) -> None:
        if self.numbers:
            await conn.executemany(
                "INSERT INTO ticket_index (oid, ticket_number, ticket_id) VALUES ($1, $2, $3)", self.numbers
            )
        if self.releases:
            await conn.executemany(
                "DELETE FROM detection_index WHERE oid = $1 AND detection_id = $2 AND ticket_id = $3",
                self.releases,
            )
        if self.moves:
            await conn.executemany(
                "UPDATE detection_index SET ticket_id = $3 WHERE oid = $1 AND detection_id = $2", self.moves
            )
        if self.new_groups:
            await conn.executemany(
                "INSERT INTO grouping_index"
                " (ticket_id, oid, group_key, first_detected_at, detection_count, open)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [tuple(row) for row in self.new_groups.values()],
            )
        if self.group_counts:
            await conn.executemany(
                "UPDATE grouping_index SET detection_count = detection_count + $2 WHERE ticket_id = $1",
                list(self.group_counts.items()),
            )
        if self.group_open:
            await conn.executemany(
                "UPDATE grouping_index SET open = $2 WHERE ticket_id = $1", list(self.group_open.items())
            )
        if self.claims:
            oids, ids, tickets, reads = zip(*self.claims, strict=True)
            inserted = await conn.fetch(
                "INSERT INTO detection_index"
                " (oid, detection_id, ticket_id, first_topic, first_partition, first_offset)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[],"
                " $4::text[], $5::int[], $6::bigint[])"
                " ON CONFLICT (oid, detection_id) DO NOTHING RETURNING oid, detection_id",
                list(oids),
                list(ids),
                list(tickets),
                [r[0] if r else None for r in reads],
                [r[1] if r else None for r in reads],
                [r[2] if r else None for r in reads],
            )
            if len(inserted) != len(self.claims):
                done = {(r[0], r[1]) for r in inserted}
                oid, detection_id, *_ = next(r for r in self.claims if (r[0], r[1]) not in done)
                raise DetectionAlreadyLinked(oid, detection_id)


class CommandHandler:
    def __init__(self, clock: Clock, cache: StateCache | None = None) -> None:
        self.clock = clock
        self.cache = StateCache() if cache is None else cache

    async def execute(
        self, conn: asyncpg.Connection, commands: Sequence[tuple[TicketCommand, CommandContext]]
    ) -> Outcome:
        """Decide and append every command in the caller's transaction; return states and new events.

        Raises DomainError subclasses (nothing is written then) and ConcurrencyError (retry). A
        stream that only UnreadCommands name and the cache does not hold is not read: its head is
        enough to append to it (decide_unread).
        """
        read = {c.ticket_id for c, _ in commands if not isinstance(c, UnreadCommand)}
        unread = {c.ticket_id for c, _ in commands} - read
        unread -= {sid for sid in unread if self.cache.get(sid) is not None}
        states = await load_states(
            conn, [sid for c, _ in commands if (sid := c.ticket_id) not in unread], self.cache
        )
        return await self._run(conn, states, commands, await store.read_heads(conn, list(unread)))

    async def merge(
        self, conn: asyncpg.Connection, target: UUID, sources: Sequence[UUID], ctx: CommandContext
    ) -> Outcome:
        """Sources become merged into the target, which inherits their detections: one transaction."""
        states = await load_states(conn, [target, *sources], self.cache)
        missing = [sid for sid in [target, *sources] if sid not in states]
        if missing:
            raise TicketNotFound(f"tickets {missing} do not exist")
        commands = plan_merge(states[target], [states[s] for s in sources])
        return await self._run(conn, states, [(c, ctx) for c in commands], {})

    async def _run(
        self,
        conn: asyncpg.Connection,
        states: dict[UUID, TicketState],
        commands: Sequence[tuple[TicketCommand, CommandContext]],
        heads: dict[UUID, store.StreamHead],
    ) -> Outcome:
        loaded_versions = {sid: s.version for sid, s in states.items()}
        loaded_versions.update((sid, h.version) for sid, h in heads.items())
        pending: dict[UUID, list[store.NewEvent]] = {}
        decided: list[TicketEvent] = []
        index = _IndexChanges()
        now = self.clock()
        for command, ctx in commands:
            sid = command.ticket_id
            head = heads.get(sid)
            if head is not None:  # appended to unread: no state to evolve, nor to cache
                assert isinstance(command, UnreadCommand)
                for event in decide_unread(command, now):
                    meta = head.metadata
                    pending.setdefault(sid, []).append(
                        self._new_event(event, meta["oid"], meta["ticket_number"], ctx)
                    )
                    decided.append(event)
                continue
            state = states.get(sid)
            for event in decide(command, state, now):
                state = evolve(state, event)
                pending.setdefault(sid, []).append(
                    self._new_event(event, state.oid, state.ticket_number, ctx)
                )
                decided.append(event)
                index.add(event, state, ctx)
            if state is not None:
                states[sid] = state
        for sid, events in pending.items():  # checked on use: harmless if this append never commits
            if sid not in heads:
                self.cache.put(states[sid], events[-1].event_id)
        await index.write(conn)
        await store.append(
            conn,
            [store.StreamAppend(sid, loaded_versions.get(sid, 0), events) for sid, events in pending.items()],
        )
        return Outcome(states, decided)

    @staticmethod
    def _new_event(event: TicketEvent, oid: str, ticket_number: int, ctx: CommandContext) -> store.NewEvent:
        return store.NewEvent(
            event_id=new_event_id(),
            type=event_type(event),
            data=encode_event(event),
            metadata={
                "actor": ctx.actor,
                "correlation_id": ctx.correlation_id,
                "causation_id": ctx.causation_id,
                "oid": oid,
                "ticket_number": ticket_number,
            },
        )


async def find_ticket_id(conn: asyncpg.Connection, oid: str, number: int) -> UUID | None:
    """The write side's own index: it never lags behind the event store like a projection may."""
    ticket_id: UUID | None = await conn.fetchval(
        "SELECT ticket_id FROM ticket_index WHERE oid = $1 AND ticket_number = $2", oid, number
    )
    return ticket_id


async def retrying(
    pool: asyncpg.Pool,
    work: Callable[[asyncpg.Connection], Awaitable[T]],
    attempts: int = 10,
    retry_on: tuple[type[BaseException], ...] = (ConcurrencyError,),
    pause_s: float = 0.002,
) -> T:
    """Run `work` in a transaction, again from a fresh read when a concurrent writer got there first."""
    for attempt in range(1, attempts + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except retry_on as exc:
            if attempt == attempts:
                raise
            log.info("transaction conflicted (%s), attempt %d; retrying", exc, attempt)
            await asyncio.sleep(pause_s * attempt)
    raise AssertionError("unreachable")


TICKET_LOCKS, GROUP_LOCKS = 7261, 7262  # advisory lock key spaces


async def advisory_locks(conn: asyncpg.Connection, keys: Sequence[str], space: int) -> None:
    """Transaction-scoped locks on every key, taken in sorted order (so writers never deadlock),
    in one round trip."""
    if keys:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, $2)))"
            " FROM (SELECT k FROM unnest($1::text[]) AS u(k) ORDER BY k) AS ordered",
            list(set(keys)),  # the statement orders them
            space,
        )


async def lock_tickets(conn: asyncpg.Connection, ticket_ids: Sequence[UUID]) -> None:
    """Queue writers of the same tickets behind each other for the transaction.

    Optimistic concurrency alone stays correct, but fifty analysts' clicks on one ticket would
    retry each other into the ground; the version check in the database remains the guarantee.
    """
    await advisory_locks(conn, [str(t) for t in ticket_ids], TICKET_LOCKS)


async def execute_together(
    pool: asyncpg.Pool, handler: CommandHandler, commands: Sequence[TicketCommand], ctx: CommandContext
) -> Outcome:
    """Commands in one transaction, their tickets locked for it; retried from a fresh read when a
    concurrent writer got there first."""

    async def work(conn: asyncpg.Connection) -> Outcome:
        await lock_tickets(conn, [c.ticket_id for c in commands])
        return await handler.execute(conn, [(c, ctx) for c in commands])

    return await retrying(pool, work)


async def execute_one(
    pool: asyncpg.Pool, handler: CommandHandler, command: TicketCommand, ctx: CommandContext
) -> Outcome:
    return await execute_together(pool, handler, [command], ctx)
