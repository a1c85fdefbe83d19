"""Tickets as the write side reads them: states folded from their streams (through the handler's
cache, reading only what is newer), the heads of streams appended to unread, and numbers."""

from collections.abc import Sequence
from uuid import UUID

from domain.events import decode_ticket_event
from domain.ticket import TicketState, evolve, fold
from services.commands.state_cache import StateCache
from services.eventstore import db
from services.eventstore import postgres as store


async def load_states(
    conn: db.Connection, ids: Sequence[UUID], cache: StateCache | None = None
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
            state = evolve(state, decode_ticket_event(r.data, r.type, r.schema))
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


async def states_before(
    conn: db.Connection, first: dict[UUID, int], cache: StateCache
) -> dict[UUID, TicketState | None]:
    """Each ticket's state just before version `first[ticket]`, for a reader following the log (the
    ExtraHop channel): the one the cache holds if it is that one (the log is read in order, so it
    usually is), else folded from the store."""
    states: dict[UUID, TicketState | None] = {}
    missing: dict[UUID, int] = {}
    for sid, version in first.items():
        hit = cache.get(sid)
        if version == 1:
            states[sid] = None
        elif hit is not None and hit.state.version == version - 1:
            states[sid] = hit.state
        else:
            missing[sid] = version
    if missing:
        read = await store.read_streams(conn, dict.fromkeys(missing, 1))
        for sid, version in missing.items():
            states[sid] = fold(
                [
                    decode_ticket_event(r.data, r.type, r.schema)
                    for r in read.get(sid, [])
                    if r.version < version
                ]
            )
    return states


async def find_ticket_id(conn: db.Connection, oid: str, number: int) -> UUID | None:
    """The write side's own index: it never lags behind the event store like a projection may."""
    ticket_id: UUID | None = await conn.fetchval(
        "SELECT ticket_id FROM ticket_index WHERE oid = $1 AND ticket_number = $2", oid, number
    )
    return ticket_id


async def ticket_numbers(conn: db.Connection, ids: Sequence[UUID]) -> dict[UUID, int]:
    rows = await conn.fetch(
        "SELECT ticket_id, ticket_number FROM ticket_index WHERE ticket_id = ANY($1::uuid[])", list(ids)
    )
    return {r[0]: r[1] for r in rows}
