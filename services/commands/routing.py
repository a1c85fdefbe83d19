"""Routing's facts on the write side: each org's board (the rules' turns, the analysts' open
tickets, who is away), read under the org's routing lock in the transaction that assigns, and the
turns written back in it. The loads follow from the assignments themselves (IndexChanges)."""

from collections.abc import Iterable
from datetime import datetime

from domain.config import OrgConfig
from domain.routing import Board, analysts_of
from services.commands.unit_of_work import advisory_locks
from services.eventstore import db, locks


async def load_boards(
    conn: db.Connection, configs: dict[str, OrgConfig], oids: Iterable[str]
) -> dict[str, Board]:
    """The boards of the orgs that route, their routing locks held to the end of the transaction
    (two writers assigning in one org take turns, so neither hands out a turn the other took)."""
    routed = sorted({oid for oid in oids if configs[oid].routing.rules})
    if not routed:
        return {}
    await advisory_locks(conn, routed, locks.ROUTING)
    boards = {oid: Board() for oid in routed}
    for r in await conn.fetch(
        "SELECT oid, rule, last_pick FROM routing_turns WHERE oid = ANY($1::text[])", routed
    ):
        boards[r[0]].turns[r[1]] = r[2]
    named = [(oid, a) for oid in routed for a in analysts_of(configs[oid].routing)]
    rows = await conn.fetch(
        "SELECT l.oid, l.analyst, l.open_tickets FROM analyst_loads l"
        " JOIN unnest($1::text[], $2::text[]) AS n(oid, analyst) ON l.oid = n.oid AND l.analyst = n.analyst",
        [n[0] for n in named],
        [n[1] for n in named],
    )
    for r in rows:
        boards[r[0]].loads[r[1]] = r[2]
    for r in await conn.fetch(
        "SELECT oid, analyst, away_until FROM analysts_away WHERE oid = ANY($1::text[])", routed
    ):
        boards[r[0]].away[r[1]] = r[2]
    return boards


async def save_turns(
    conn: db.Connection, before: dict[str, dict[int, int]], boards: dict[str, Board]
) -> None:
    moved = [
        (oid, rule, pick)
        for oid, board in boards.items()
        for rule, pick in board.turns.items()
        if before.get(oid, {}).get(rule) != pick
    ]
    if moved:
        await conn.executemany(
            "INSERT INTO routing_turns (oid, rule, last_pick) VALUES ($1, $2, $3)"
            " ON CONFLICT (oid, rule) DO UPDATE SET last_pick = EXCLUDED.last_pick",
            moved,
        )


async def set_away(
    conn: db.Connection, oid: str, analyst: str, until: datetime | None, by: str, now: datetime
) -> None:
    """Out of rotation until `until` (None: back now)."""
    if until is None or until <= now:
        await conn.execute("DELETE FROM analysts_away WHERE oid = $1 AND analyst = $2", oid, analyst)
        return
    await conn.execute(
        "INSERT INTO analysts_away (oid, analyst, away_until, set_by, set_at) VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (oid, analyst) DO UPDATE SET away_until = EXCLUDED.away_until,"
        " set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at",
        oid,
        analyst,
        until,
        by,
        now,
    )
