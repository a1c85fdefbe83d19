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
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec

from domain.config import OrgConfig
from projections.ticket_queries import ticket_view
from projections.tickets import TicketsProjection
from services.archive.files import FORMAT, ArchiveEntry, archive_file, archive_path, write
from services.commands.repository import load_states
from services.commands.unit_of_work import lock_tickets
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import lock_checkpoints
from services.evidence.store import EvidenceStore

log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()


# Tickets archived per pass. A pass runs between the scheduler's ticks, so a large backlog (an org
# that lowers its retention, say) is worked off a batch at a time while SLA clocks keep ticking.
RETENTION_BATCH = 200
ARCHIVE_KEPT = timedelta(days=730)


async def due(
    conn: db.Connection, configs: dict[str, OrgConfig], now: datetime, limit: int = RETENTION_BATCH
) -> list[UUID]:
    """Resolved or closed tickets past retention whose events every subscriber has handled, the
    longest settled first, at most `limit`."""
    if not configs:
        return []
    # Per org, only the due end of its range of settled tickets (as a join, every resolved and
    # closed ticket was read each pass); `safe`: where the slowest subscriber is in each shard (a
    # ticket's events are all in its org's shard).
    rows = await conn.fetch(
        "WITH safe AS (SELECT shard, min(position) AS position FROM subscription_checkpoints GROUP BY shard)"
        " SELECT t.ticket_id FROM unnest($1::text[], $2::timestamptz[]) AS c(oid, cutoff)"
        " CROSS JOIN LATERAL (SELECT ticket_id, status_changed_at FROM tickets t WHERE t.oid = c.oid"
        " AND t.status IN ('resolved', 'closed') AND t.status_changed_at <= c.cutoff"
        " AND NOT EXISTS (SELECT 1 FROM events e LEFT JOIN safe ON safe.shard = e.shard"
        " WHERE e.stream_id = t.ticket_id AND e.position > coalesce(safe.position, 0))"
        " ORDER BY t.status_changed_at LIMIT $3) AS t"
        " ORDER BY t.status_changed_at LIMIT $3",
        list(configs),
        [now - timedelta(days=c.retention_days) for c in configs.values()],
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
    conn: db.Connection, ticket_id: UUID, folder: Path, now: datetime, actor: str
) -> ArchiveEntry | None:
    """Archive one ticket in the caller's transaction; None if it no longer qualifies."""
    await lock_tickets(conn, [ticket_id])
    events = await store.read_stream(conn, ticket_id)
    state = (await load_states(conn, [ticket_id])).get(ticket_id)
    if state is None or state.status not in ("resolved", "closed"):
        return None
    blob = export(events, state, now)
    path = archive_file(folder, state.oid, ticket_id)
    await asyncio.to_thread(write, path, blob)  # before the commit: a failed one leaves a harmless file
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
    await lock_checkpoints(conn, TicketsProjection.name)
    await conn.execute(
        "INSERT INTO archived_tickets SELECT ticket_id, oid, ticket_number, status, severity, classification,"
        " assignee, detection_cat, sensor_id, escalated, created_at, acknowledged_at, resolved_at, closed_at,"
        " status_changed_at FROM tickets WHERE ticket_id = $1",
        ticket_id,
    )
    await TicketsProjection().forget(conn, [ticket_id])
    await conn.execute("DELETE FROM grouping_index WHERE ticket_id = $1", ticket_id)
    await conn.execute(
        "INSERT INTO archive_log (ticket_id, oid, ticket_number, events, first_position, last_position,"
        " location, sha256, bytes, archived_at, archived_by)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        ticket_id, state.oid, state.ticket_number, len(events), events[0].position, events[-1].position,
        entry.location, entry.sha256, entry.bytes, now, actor,
    )  # fmt: skip
    return entry


async def run_retention(
    pool: db.Pool,
    configs: dict[str, OrgConfig],
    folder: Path,
    now: datetime,
    limit: int = RETENTION_BATCH,
    evidence: EvidenceStore | None = None,
) -> int:
    """Archive up to `limit` due tickets, one transaction each, and purge up to `limit` archives
    past ARCHIVE_KEPT (with their evidence files); how many were archived."""
    async with pool.acquire() as conn:
        candidates = await due(conn, configs, now, limit)
    archived = 0
    for ticket_id in candidates:
        async with pool.acquire() as conn, conn.transaction():
            archived += await archive_ticket(conn, ticket_id, folder, now, "system") is not None
    if archived:
        log.info("retention: archived %d tickets", archived)
    if purged := await purge_archives(pool, now, limit, evidence):
        log.info("retention: purged %d archives kept since %s", purged, (now - ARCHIVE_KEPT).date())
    return archived


async def purge_archives(
    pool: db.Pool, now: datetime, limit: int = RETENTION_BATCH, evidence: EvidenceStore | None = None
) -> int:
    """Purge up to `limit` archives older than ARCHIVE_KEPT, the oldest first, one transaction
    each; how many. The file goes inside the transaction: if the commit then fails, the rows stay
    and the next pass purges them again (a missing file is no error). So do the ticket's evidence
    files that no other ticket of the org still holds (the store keeps one file per content)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT ticket_id, location FROM archive_log WHERE purged_at IS NULL AND archived_at <= $1"
            " ORDER BY archived_at LIMIT $2",
            now - ARCHIVE_KEPT,
            limit,
        )
    for ticket_id, location in rows:
        async with pool.acquire() as conn, conn.transaction():
            files = await _evidence_files(conn, ticket_id) if evidence is not None else []
            await conn.execute("SELECT ticketing_purge_stream($1)", ticket_id)
            await conn.execute("DELETE FROM archived_tickets WHERE ticket_id = $1", ticket_id)
            await conn.execute("UPDATE archive_log SET purged_at = $2 WHERE ticket_id = $1", ticket_id, now)
            if (path := archive_path(location)) is not None:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            for oid, sha in files:
                if evidence is not None and not await _held_elsewhere(conn, oid, sha, ticket_id):
                    await evidence.delete(oid, sha)
    return len(rows)


async def _evidence_files(conn: db.Connection, ticket_id: UUID) -> list[tuple[str, str]]:
    """(org, sha256) of the uploaded files an archived ticket's events record."""
    rows = await conn.fetch(
        "SELECT DISTINCT metadata->>'oid', data->'artifact'->>'sha256' FROM events_archive"
        " WHERE stream_id = $1 AND type = 'artifact_added' AND data->'artifact'->>'sha256' IS NOT NULL",
        ticket_id,
    )
    return [(r[0], r[1]) for r in rows]


async def _held_elsewhere(conn: db.Connection, oid: str, sha: str, ticket_id: UUID) -> bool:
    """Another ticket of the org, active or archived, holds the same content."""
    held = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM ticket_artifacts WHERE oid = $1 AND sha256 = $2 AND ticket_id <> $3)"
        " OR EXISTS (SELECT 1 FROM events_archive WHERE stream_id <> $3 AND type = 'artifact_added'"
        " AND metadata->>'oid' = $1 AND data->'artifact'->>'sha256' = $2)",
        oid,
        sha,
        ticket_id,
    )
    return bool(held)
