"""Retention: resolved and closed tickets older than the org's `retention_days` are archived.

An archive is one gzip-compressed, self-describing JSON document per ticket (its state, evidence
and full event history), written under the archive folder. In one transaction per ticket, the
ticket's events move from `events` to `events_archive` (through a function that runs as the
schema's owner, since the runtime role may not delete events; the append-only guard lets exactly
that stream through), its read rows leave the active
tables while the facts reports need stay in `archived_tickets`, and `archive_log` records the move.
Only tickets whose every event all subscribers (projections, relay) have already handled are moved.

Archived data is kept ARCHIVE_KEPT (the seed's two years), then purged: its archived events (the
owner's second function, for a stream archive_log records as archived), its `archived_tickets`
row and its file. `archive_log` keeps the record, with `purged_at`.
"""

import asyncio
import gzip
import hashlib
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname
from uuid import UUID

import asyncpg
import msgspec

from domain.config import OrgConfig
from projections.ticket_queries import ticket_view
from projections.tickets import TicketsProjection
from services.commands.repository import load_states
from services.commands.unit_of_work import lock_tickets
from services.eventstore import postgres as store
from services.eventstore.subscription import lock_checkpoint

log = logging.getLogger(__name__)

FORMAT = "soc-ticketing-archive/1"
_encoder = msgspec.json.Encoder()


class ArchiveEntry(msgspec.Struct):
    ticket_id: UUID
    oid: str
    ticket_number: int
    status: str
    severity: str
    created_at: datetime
    events: int
    location: str
    sha256: str
    bytes: int
    archived_at: datetime
    archived_by: str


# Tickets archived per pass. A pass runs between the scheduler's ticks, so a large backlog (an org
# that lowers its retention, say) is worked off a batch at a time while SLA clocks keep ticking.
RETENTION_BATCH = 200
ARCHIVE_KEPT = timedelta(days=730)


async def due(
    conn: asyncpg.Connection, configs: dict[str, OrgConfig], now: datetime, limit: int = RETENTION_BATCH
) -> list[UUID]:
    """Resolved or closed tickets past retention whose events every subscriber has handled, the
    longest settled first, at most `limit`."""
    if not configs:
        return []
    safe = await conn.fetchval("SELECT coalesce(min(position), 0) FROM subscription_checkpoints")
    # Per org, only the due end of its range of settled tickets (as a join, every resolved and
    # closed ticket was read each pass).
    rows = await conn.fetch(
        "SELECT t.ticket_id FROM unnest($1::text[], $2::timestamptz[]) AS c(oid, cutoff)"
        " CROSS JOIN LATERAL (SELECT ticket_id, status_changed_at FROM tickets t WHERE t.oid = c.oid"
        " AND t.status IN ('resolved', 'closed') AND t.status_changed_at <= c.cutoff"
        " AND NOT EXISTS (SELECT 1 FROM events e WHERE e.stream_id = t.ticket_id AND e.position > $3)"
        " ORDER BY t.status_changed_at LIMIT $4) AS t"
        " ORDER BY t.status_changed_at LIMIT $4",
        list(configs),
        [now - timedelta(days=c.retention_days) for c in configs.values()],
        safe,
        limit,
    )
    return [r[0] for r in rows]


def export(events: list[store.RecordedEvent], state: Any, archived_at: datetime) -> bytes:
    document = {
        "format": FORMAT,
        "archived_at": archived_at,
        "ticket": ticket_view(state),
        "detections": list(state.detections.values()),
        "entities": list(state.entities.values()),
        "telemetry": list(state.telemetry.values()),
        "artifacts": list(state.artifacts.values()),
        "events": [
            {
                "position": e.position,
                "event_id": e.event_id,
                "version": e.version,
                "type": e.type,
                "data": msgspec.json.decode(e.data),
                "metadata": e.metadata,
                "recorded_at": e.recorded_at,
            }
            for e in events
        ],
    }
    return gzip.compress(_encoder.encode(document), mtime=0)


async def archive_ticket(
    conn: asyncpg.Connection, ticket_id: UUID, folder: Path, now: datetime, actor: str
) -> ArchiveEntry | None:
    """Archive one ticket in the caller's transaction; None if it no longer qualifies."""
    await lock_tickets(conn, [ticket_id])
    events = await store.read_stream(conn, ticket_id)
    state = (await load_states(conn, [ticket_id])).get(ticket_id)
    if state is None or state.status not in ("resolved", "closed"):
        return None
    blob = export(events, state, now)
    path = archive_file(folder, state.oid, ticket_id)
    await asyncio.to_thread(_write, path, blob)  # before the commit: a failed one leaves a harmless file
    entry = ArchiveEntry(
        ticket_id=ticket_id,
        oid=state.oid,
        ticket_number=state.ticket_number,
        status=state.status,
        severity=state.severity,
        created_at=state.created_at,
        events=len(events),
        location=path.resolve().as_uri(),
        sha256=hashlib.sha256(blob).hexdigest(),
        bytes=len(blob),
        archived_at=now,
        archived_by=actor,
    )
    # The runtime role may not delete events: the owner's function moves them (migration 0016).
    await conn.execute("SELECT ticketing_archive_stream($1, $2)", ticket_id, now)
    # The read tables (and the counts their triggers keep) change under the projector's checkpoint
    # lock, like every projection write: both sides then lock in one order and cannot deadlock.
    await lock_checkpoint(conn, TicketsProjection.name)
    await conn.execute(
        "INSERT INTO archived_tickets SELECT ticket_id, oid, ticket_number, status, severity, classification,"
        " assignee, detection_cat, sensor_id, escalated, created_at, acknowledged_at, resolved_at, closed_at,"
        " status_changed_at FROM tickets WHERE ticket_id = $1",
        ticket_id,
    )
    for table in ("tickets", "ticket_detections", "ticket_entities", "ticket_telemetry", "ticket_artifacts"):
        await conn.execute(f"DELETE FROM {table} WHERE ticket_id = $1", ticket_id)
    await conn.execute("DELETE FROM grouping_index WHERE ticket_id = $1", ticket_id)
    await conn.execute(
        "INSERT INTO archive_log (ticket_id, oid, ticket_number, events, first_position, last_position,"
        " location, sha256, bytes, archived_at, archived_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ticket_id, state.oid, state.ticket_number, len(events), events[0].position, events[-1].position,
        entry.location, entry.sha256, entry.bytes, now, actor,
    )  # fmt: skip
    return entry


_PLAIN_ORG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def archive_file(folder: Path, oid: str, ticket_id: UUID) -> Path:
    """Where a ticket's archive goes: under its org's folder, always inside `folder`. An org id is
    whatever a detection said (`../x`, `/etc`, a backslash); only a plain one names its folder
    itself, any other is named by its hash (a leading `_`, which no plain name has)."""
    plain = _PLAIN_ORG.fullmatch(oid) is not None  # no separator, and not "." or ".."
    name = oid if plain else "_" + hashlib.sha256(oid.encode()).hexdigest()[:32]
    return folder / name / f"{ticket_id}.json.gz"


def archive_path(location: str) -> Path | None:
    """The file a recorded location names (`Path.as_uri()` percent-encodes, so a folder with a
    space or an accent needs decoding back), or None for a location that is not a file."""
    parts = urlsplit(location)
    return Path(url2pathname(parts.path)) if parts.scheme == "file" else None


def _write(path: Path, blob: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)


async def run_retention(
    pool: asyncpg.Pool,
    configs: dict[str, OrgConfig],
    folder: Path,
    now: datetime,
    limit: int = RETENTION_BATCH,
) -> int:
    """Archive up to `limit` due tickets, one transaction each, and purge up to `limit` archives
    past ARCHIVE_KEPT; how many were archived."""
    async with pool.acquire() as conn:
        candidates = await due(conn, configs, now, limit)
    archived = 0
    for ticket_id in candidates:
        async with pool.acquire() as conn, conn.transaction():
            archived += await archive_ticket(conn, ticket_id, folder, now, "system") is not None
    if archived:
        log.info("retention: archived %d tickets", archived)
    if purged := await purge_archives(pool, now, limit):
        log.info("retention: purged %d archives kept since %s", purged, (now - ARCHIVE_KEPT).date())
    return archived


async def purge_archives(pool: asyncpg.Pool, now: datetime, limit: int = RETENTION_BATCH) -> int:
    """Purge up to `limit` archives older than ARCHIVE_KEPT, the oldest first, one transaction
    each; how many. The file goes inside the transaction: if the commit then fails, the rows stay
    and the next pass purges them again (a missing file is no error)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ticket_id, location FROM archive_log WHERE purged_at IS NULL AND archived_at <= $1"
            " ORDER BY archived_at LIMIT $2",
            now - ARCHIVE_KEPT,
            limit,
        )
    for ticket_id, location in rows:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT ticketing_purge_stream($1)", ticket_id)
            await conn.execute("DELETE FROM archived_tickets WHERE ticket_id = $1", ticket_id)
            await conn.execute("UPDATE archive_log SET purged_at = $2 WHERE ticket_id = $1", ticket_id, now)
            if (path := archive_path(location)) is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
    return len(rows)


async def list_archive(conn: asyncpg.Connection, oids: list[str], limit: int) -> list[ArchiveEntry]:
    rows = await conn.fetch(
        "SELECT l.ticket_id, l.oid, l.ticket_number, a.status, a.severity, a.created_at, l.events,"
        " l.location, l.sha256, l.bytes, l.archived_at, l.archived_by"
        " FROM archive_log l JOIN archived_tickets a USING (ticket_id)"
        " WHERE l.oid = ANY($1::text[]) ORDER BY l.archived_at DESC, l.ticket_number DESC LIMIT $2",
        oids,
        limit,
    )
    return [ArchiveEntry(*r) for r in rows]


class ArchiveDamaged(Exception):
    pass


class ArchivePurged(Exception):
    def __init__(self, number: int, purged_at: datetime) -> None:
        super().__init__(f"archived ticket {number} was purged on {purged_at.date()}, after two years")


async def read_archive(conn: asyncpg.Connection, oid: str, number: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        "SELECT location, sha256, purged_at FROM archive_log WHERE oid = $1 AND ticket_number = $2",
        oid,
        number,
    )
    if row is None:
        return None
    location, digest, purged_at = row
    if purged_at is not None:
        raise ArchivePurged(number, purged_at)
    path = archive_path(location)
    if path is None:
        raise ArchiveDamaged(f"unsupported archive location {location}")
    blob = await asyncio.to_thread(path.read_bytes)
    if hashlib.sha256(blob).hexdigest() != digest:
        raise ArchiveDamaged(f"archive of ticket {number} does not match its recorded checksum")
    document: dict[str, Any] = msgspec.json.decode(gzip.decompress(blob))
    return document
