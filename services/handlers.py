"""The command handler: the only code that appends events. Shared by ingest, API and scheduler.

It loads the streams a batch of commands touches, folds them into state, asks the domain to
decide, keeps the write-side indexes (ticket numbers, detection ownership) and appends, all in
the caller's transaction, so a retry after any failure starts from a clean slate.
"""

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from domain.commands import TicketCommand
from domain.errors import ConcurrencyError, DetectionAlreadyLinked
from domain.events import DetectionAdded, TicketCreated, TicketEvent, decode_event, encode_event, event_type
from domain.ticket import TicketState, decide, evolve
from services.eventstore import postgres as store

Clock = Callable[[], datetime]

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


async def load_states(conn: asyncpg.Connection, ids: Sequence[UUID]) -> dict[UUID, TicketState]:
    states: dict[UUID, TicketState] = {}
    for stream_id, recorded in (await store.read_streams(conn, ids)).items():
        state: TicketState | None = None
        for r in recorded:
            state = evolve(state, decode_event(r.data))
        assert state is not None
        states[stream_id] = state
    return states


class CommandHandler:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    async def execute(
        self, conn: asyncpg.Connection, commands: Sequence[tuple[TicketCommand, CommandContext]]
    ) -> Outcome:
        """Decide and append every command in the caller's transaction; return states and new events.

        Raises DomainError subclasses (nothing is written then) and ConcurrencyError (retry).
        """
        states = await load_states(conn, [c.ticket_id for c, _ in commands])
        loaded_versions = {sid: s.version for sid, s in states.items()}
        pending: dict[UUID, list[store.NewEvent]] = {}
        decided: list[TicketEvent] = []
        detection_rows: list[tuple[str, str, UUID]] = []
        number_rows: list[tuple[str, int, UUID]] = []
        now = self.clock()
        for command, ctx in commands:
            sid = command.ticket_id
            state = states.get(sid)
            for event in decide(command, state, now):
                state = evolve(state, event)
                pending.setdefault(sid, []).append(self._new_event(event, state, ctx))
                decided.append(event)
                self._index(event, state, detection_rows, number_rows)
            if state is not None:
                states[sid] = state
        await self._write_indexes(conn, detection_rows, number_rows)
        await store.append(
            conn,
            [store.StreamAppend(sid, loaded_versions.get(sid, 0), events) for sid, events in pending.items()],
        )
        return Outcome(states, decided)

    @staticmethod
    def _new_event(event: TicketEvent, state: TicketState, ctx: CommandContext) -> store.NewEvent:
        return store.NewEvent(
            event_id=uuid.uuid4(),
            type=event_type(event),
            data=encode_event(event),
            metadata={
                "actor": ctx.actor,
                "correlation_id": ctx.correlation_id,
                "causation_id": ctx.causation_id,
                "oid": state.oid,
                "ticket_number": state.ticket_number,
            },
        )

    @staticmethod
    def _index(
        event: TicketEvent,
        state: TicketState,
        detection_rows: list[tuple[str, str, UUID]],
        number_rows: list[tuple[str, int, UUID]],
    ) -> None:
        match event:
            case TicketCreated():
                number_rows.append((state.oid, state.ticket_number, state.ticket_id))
                if event.detection is not None:
                    detection_rows.append((state.oid, event.detection.detection_id, state.ticket_id))
            case DetectionAdded():
                detection_rows.append((state.oid, event.detection.detection_id, state.ticket_id))

    @staticmethod
    async def _write_indexes(
        conn: asyncpg.Connection,
        detection_rows: list[tuple[str, str, UUID]],
        number_rows: list[tuple[str, int, UUID]],
    ) -> None:
        if number_rows:
            await conn.executemany(
                "INSERT INTO ticket_index (oid, ticket_number, ticket_id) VALUES ($1, $2, $3)", number_rows
            )
        if detection_rows:
            oids, ids, tickets = zip(*detection_rows, strict=True)
            inserted = await conn.fetch(
                "INSERT INTO detection_index (oid, detection_id, ticket_id)"
                " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[])"
                " ON CONFLICT (oid, detection_id) DO NOTHING RETURNING oid, detection_id",
                list(oids),
                list(ids),
                list(tickets),
            )
            if len(inserted) != len(detection_rows):
                done = {(r[0], r[1]) for r in inserted}
                oid, detection_id, _ = next(r for r in detection_rows if (r[0], r[1]) not in done)
                raise DetectionAlreadyLinked(oid, detection_id)


async def find_ticket_id(conn: asyncpg.Connection, oid: str, number: int) -> UUID | None:
    """The write side's own index: it never lags behind the event store like a projection may."""
    ticket_id: UUID | None = await conn.fetchval(
        "SELECT ticket_id FROM ticket_index WHERE oid = $1 AND ticket_number = $2", oid, number
    )
    return ticket_id


async def execute_one(
    pool: asyncpg.Pool,
    handler: CommandHandler,
    command: TicketCommand,
    ctx: CommandContext,
    attempts: int = 10,
) -> Outcome:
    """One command in its own transaction, re-deciding on the latest state after a concurrent append."""
    for attempt in range(attempts):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await handler.execute(conn, [(command, ctx)])
        except ConcurrencyError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.002 * (attempt + 1))
    raise AssertionError("unreachable")
