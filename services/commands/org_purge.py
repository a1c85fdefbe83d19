"""Unsubscribing an org: all its ticket data deleted, its tombstone kept (the seed's Data Retention:
"unsubscribing deletes all ticket data for the organization").

The tombstone is written first: it is the audit record (who, when, what was deleted), and from its
commit on the ingest drops the org's detections instead of opening tickets with them. The org's
events then go stream by stream through the owner's narrow function (`ticketing_purge_org_streams`,
migration 0023), then every table's rows of the org, its credentials and its archive files. Each
step deletes what is left, so a purge that crashed halfway is finished by running it again; the
last one marks the tombstone complete and publishes `org_purged` on ticket-events (an event on the
tombstone's own stream, which the purge does not touch) so that subscribers drop their copies.

Credentials that name only the org are revoked, not deleted (they stay listed, as revoked); a token
that names other orgs too loses this one (its record's `lost_orgs`, which every API process reads
with the revocations). The tombstone is checked by the one intake (services.commands.intake) at
every door. An operator may re-subscribe the org (`resubscribe_org`): data detected after the
purge flows again, nothing from before it returns.
"""

import asyncio
import logging
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from domain.errors import NotPurged
from domain.events import OrgPurged, OrgResubscribed
from projections.registry import all_projections
from services.archive.files import archive_file
from services.commands.configs import config_stream
from services.commands.envelope import CommandContext, envelope
from services.commands.handlers import Clock
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import lock_checkpoints
from services.evidence.store import EvidenceStore

log = logging.getLogger(__name__)

TOMBSTONE_NAMESPACE = uuid.UUID("5d0b7a43-6a1c-4f70-9d44-2b8c0e7f3a19")
STREAMS_PER_STEP = 500
# Every table that holds an org's rows in an `oid` column, the write-side indexes last (while they
# remain, a re-run still finds the org's streams).
# The read tables' rows go through their projections (`forget_org`).
ORG_TABLES = (
    "grouping_index",
    "suppressions",
    "routing_turns",
    "analyst_loads",
    "analysts_away",
    "archived_tickets",
    "org_configs",
    "org_secrets",
    "delivery_queue",
    "delivery_refusals",
    "notification_bursts",
    "detection_index",
    "ticket_numbers",
    "archive_log",
    "ticket_index",
)


PURGE_ACTOR = "system:org-purge"


class Tombstone(msgspec.Struct, frozen=True):
    oid: str
    requested_at: datetime
    requested_by: str
    completed_at: datetime | None
    counts: dict[str, int]
    resubscribed_at: datetime | None = None
    resubscribed_by: str | None = None


def tombstone_stream(oid: str) -> uuid.UUID:
    return uuid.uuid5(TOMBSTONE_NAMESPACE, oid)


def _now() -> datetime:
    return datetime.now(UTC)


async def purge_org(
    pool: db.Pool,
    oid: str,
    by: str,
    archive_dir: Path,
    clock: Clock = _now,
    evidence: EvidenceStore | None = None,
    credentials: db.Pool | None = None,
) -> Tombstone:
    """`pool`: the org's database; `credentials`: the one holding tokens and API keys (the home
    database of a placement; by default the same)."""
    async with pool.acquire() as conn:
        # A re-subscribed org purged again starts a new purge; any other asks again for the first.
        await conn.execute(
            "INSERT INTO org_tombstones (oid, requested_by) VALUES ($1, $2) ON CONFLICT (oid) DO UPDATE"
            " SET requested_at = now(), requested_by = EXCLUDED.requested_by, completed_at = NULL,"
            " counts = '{}', resubscribed_at = NULL, resubscribed_by = NULL"
            " WHERE org_tombstones.resubscribed_at IS NOT NULL",
            oid,
            by,
        )
        # Ticket creations of the org already under way hold its ticket_numbers row: once they are
        # committed, the sweep below sees their tickets; later ones see the tombstone and drop.
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM ticket_numbers WHERE oid = $1 FOR UPDATE", oid)
    counts: dict[str, int] = {}
    while True:  # the org's ticket streams, live and archived
        async with pool.acquire() as conn, conn.transaction():
            streams = [
                r[0]
                for r in await conn.fetch(
                    "SELECT ticket_id FROM ticket_index WHERE oid = $1"
                    " UNION SELECT ticket_id FROM archive_log WHERE oid = $1 LIMIT $2",
                    oid,
                    STREAMS_PER_STEP,
                )
            ]
            if not streams:
                break
            counts["events"] = counts.get("events", 0) + await _purge_streams(conn, oid, streams)
            for table in ("ticket_index", "archive_log"):
                done = await conn.execute(f"DELETE FROM {table} WHERE ticket_id = ANY($1::uuid[])", streams)
                counts[table] = counts.get(table, 0) + int(done.split()[-1])
    async with pool.acquire() as conn, conn.transaction():
        held = [r[0] for r in await conn.fetch("SELECT suppression_id FROM suppressions WHERE oid = $1", oid)]
        streams = [config_stream(oid), *held]  # its configuration's and its suppressions'
        counts["events"] = counts.get("events", 0) + await _purge_streams(conn, oid, streams)
        for projection in all_projections():
            await lock_checkpoints(conn, projection.name)
            counts.update(await projection.forget_org(conn, oid))
        for table in ORG_TABLES:
            done = await conn.execute(f"DELETE FROM {table} WHERE oid = $1", oid)
            counts[table] = counts.get(table, 0) + int(done.split()[-1])
        if credentials is None or credentials is pool:
            counts.update(await _revoke_credentials(conn, oid))
    if credentials is not None and credentials is not pool:  # idempotent, as a re-run needs
        async with credentials.acquire() as conn, conn.transaction():
            counts.update(await _revoke_credentials(conn, oid))
    folder = archive_file(archive_dir, oid, uuid.UUID(int=0)).parent
    if await asyncio.to_thread(folder.is_dir):
        counts["archive_files"] = len(await asyncio.to_thread(lambda: list(folder.iterdir())))
        await asyncio.to_thread(shutil.rmtree, folder)
    if evidence is not None:  # its evidence files (uploaded artifacts): the org's folder of the store
        counts["evidence_files"] = await evidence.delete_org(oid)
    return await _complete(pool, oid, counts, clock)


async def _revoke_credentials(conn: db.Connection, oid: str) -> dict[str, int]:
    """The org's API keys and the tokens naming only it are revoked (kept, listed as revoked); a
    token naming other orgs too loses this one."""
    keys = await conn.execute(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = $2 WHERE oid = $1 AND revoked_at IS NULL",
        oid,
        PURGE_ACTOR,
    )
    tokens = await conn.execute(
        "UPDATE issued_tokens SET revoked_at = now(), revoked_by = $2"
        " WHERE orgs = ARRAY[$1]::text[] AND revoked_at IS NULL",
        oid,
        PURGE_ACTOR,
    )
    narrowed = await conn.execute(
        "UPDATE issued_tokens SET orgs = array_remove(orgs, $1), permissions = permissions - $1,"
        " lost_orgs = array_append(lost_orgs, $1) WHERE orgs @> ARRAY[$1]::text[] AND cardinality(orgs) > 1",
        oid,
    )
    return {
        "api_keys_revoked": int(keys.split()[-1]),
        "tokens_revoked": int(tokens.split()[-1]),
        "tokens_narrowed": int(narrowed.split()[-1]),
    }


async def resubscribe_org(pool: db.Pool, oid: str, by: str) -> Tombstone:
    """Take the org in again: from now on its detections flow, but only those detected after its
    purge (nothing old returns). Recorded on the tombstone and as `org_resubscribed`."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE org_tombstones SET resubscribed_at = now(), resubscribed_by = $2"
            " WHERE oid = $1 AND completed_at IS NOT NULL AND resubscribed_at IS NULL"
            " RETURNING requested_at, requested_by, completed_at, counts::text, resubscribed_at",
            oid,
            by,
        )
        if row is None:
            raise NotPurged(f"org {oid!r} has no completed purge to re-subscribe from")
        event = OrgResubscribed(ts=row["resubscribed_at"], oid=oid, purged_at=row["requested_at"])
        await _append(conn, oid, event, CommandContext(actor=by))
    return Tombstone(
        oid,
        row["requested_at"],
        row["requested_by"],
        row["completed_at"],
        msgspec.json.decode(row["counts"]),
        row["resubscribed_at"],
        by,
    )


async def _append(
    conn: db.Connection, oid: str, event: OrgPurged | OrgResubscribed, ctx: CommandContext
) -> None:
    """On the tombstone's own stream, which a purge does not touch; a later purge appends after."""
    stream = tombstone_stream(oid)
    version = (await store.read_heads(conn, [stream])).get(stream)
    await store.append(
        conn, [store.StreamAppend(stream, version.version if version else 0, [envelope(event, ctx, oid)])]
    )


async def _purge_streams(conn: db.Connection, oid: str, streams: list[uuid.UUID]) -> int:
    purged: int = await conn.fetchval("SELECT ticketing_purge_org_streams($1, $2::uuid[])", oid, streams)
    return purged


async def _complete(pool: db.Pool, oid: str, counts: dict[str, int], clock: Clock) -> Tombstone:
    """Add this run's counts; the first run to finish marks the tombstone complete and publishes."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT requested_at, requested_by, completed_at, counts::text FROM org_tombstones"
            " WHERE oid = $1 FOR UPDATE",
            oid,
        )
        assert row is not None  # written by purge_org before any of this
        total: dict[str, int] = msgspec.json.decode(row["counts"])
        for key, n in counts.items():
            total[key] = total.get(key, 0) + n
        completed_at = row["completed_at"]
        if completed_at is None:
            completed_at = clock()
            event = OrgPurged(ts=completed_at, oid=oid, counts=total)
            await _append(conn, oid, event, CommandContext(actor=row["requested_by"]))
            log.info("org %s purged: %s", oid, total)
        await conn.execute(
            "UPDATE org_tombstones SET counts = $2::jsonb, completed_at = $3 WHERE oid = $1",
            oid,
            msgspec.json.encode(total).decode(),
            completed_at,
        )
    return Tombstone(oid, row["requested_at"], row["requested_by"], completed_at, total)
