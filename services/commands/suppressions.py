"""Suppressions on the write side: created and ended through the API, read by the intake in its
transaction, and what they hold recorded on their own streams (the suppression's id is its stream).

`suppressions` keeps each one as its events make it, with its stream version and what it held,
written in the same transaction as those events.
"""

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import msgspec

from domain import suppressions as sup
from domain.detections import Detection
from domain.errors import ConcurrencyError, ItemNotFound
from domain.suppressions import Suppression, SuppressionRequest
from services.commands.envelope import CommandContext, envelope
from services.eventstore import db
from services.eventstore import postgres as store

_decoder = msgspec.json.Decoder(Suppression)
_encoder = msgspec.json.Encoder()


class SuppressionRow(Suppression, frozen=True):
    """A suppression as GET lists it: what it matches, why, until when, and what it has held."""

    active: bool = False
    held: int = 0
    last_detection_id: str | None = None
    last_detected_at: datetime | None = None
    last_held_at: datetime | None = None


async def active_suppressions(
    conn: db.Connection, oids: Sequence[str], now: datetime
) -> dict[str, list[Suppression]]:
    """Each org's suppressions that hold at `now`, oldest first (the first that matches holds)."""
    rows = await conn.fetch(
        "SELECT oid, suppression::text FROM suppressions WHERE oid = ANY($1::text[])"
        " AND ended_at IS NULL AND expires_at > $2 ORDER BY created_at, suppression_id",
        list(oids),
        now,
    )
    out: dict[str, list[Suppression]] = {}
    for r in rows:
        out.setdefault(r[0], []).append(_decoder.decode(r[1]))
    return out


async def record_held(
    conn: db.Connection,
    held: dict[UUID, list[Detection]],
    ctx: CommandContext,
    now: datetime,
) -> None:
    """Append what each suppression held in this batch to its stream and count it. The rows are
    locked in id order; one ended meanwhile (its end committed after the intake read it) sends the
    batch back to be decided again, where it holds nothing."""
    ids = sorted(held)
    rows = await conn.fetch(
        "SELECT suppression_id, oid, version, ended_at FROM suppressions"
        " WHERE suppression_id = ANY($1::uuid[]) ORDER BY suppression_id FOR UPDATE",
        ids,
    )
    if len(rows) != len(ids) or any(r["ended_at"] is not None for r in rows):
        raise ConcurrencyError("a suppression ended while the batch was decided")
    appends = []
    counts = []
    for r in rows:
        detections = held[r["suppression_id"]]
        event = sup.DetectionsSuppressed(
            ts=now, suppression_id=r["suppression_id"], oid=r["oid"], detections=tuple(detections)
        )
        appends.append(
            store.StreamAppend(r["suppression_id"], r["version"], [envelope(event, ctx, r["oid"])])
        )
        last = detections[-1]
        counts.append((r["suppression_id"], len(detections), last.detection_id, last.detected_at, now))
    await store.append(conn, appends)
    await conn.executemany(
        "UPDATE suppressions SET version = version + 1, held = held + $2, last_detection_id = $3,"
        " last_detected_at = $4, last_held_at = $5 WHERE suppression_id = $1",
        counts,
    )


async def create_suppression(
    conn: db.Connection,
    oid: str,
    request: SuppressionRequest,
    suppression_id: UUID,
    ctx: CommandContext,
    now: datetime,
) -> Suppression:
    event = sup.create(request, suppression_id, oid, ctx.actor, now)
    s = event.suppression
    await store.append(conn, [store.StreamAppend(suppression_id, 0, [envelope(event, ctx, oid)])])
    await conn.execute(
        "INSERT INTO suppressions (suppression_id, oid, suppression, created_at, expires_at, version)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, 1)",
        suppression_id,
        oid,
        _encoder.encode(s).decode(),
        now,
        s.expires_at,
    )
    return s


async def end_suppression(
    conn: db.Connection, oid: str, suppression_id: UUID, ctx: CommandContext, now: datetime
) -> None:
    """End it early; ending one that is already over records nothing (idempotent)."""
    row = await conn.fetchrow(
        "SELECT suppression::text, version, ended_at FROM suppressions"
        " WHERE suppression_id = $1 AND oid = $2 FOR UPDATE",
        suppression_id,
        oid,
    )
    if row is None:
        raise ItemNotFound(f"suppression {suppression_id} does not exist in org {oid!r}")
    current = msgspec.structs.replace(_decoder.decode(row[0]), ended_at=row[2])
    events = sup.end(current, now)
    if not events:
        return
    await store.append(
        conn, [store.StreamAppend(suppression_id, row[1], [envelope(e, ctx, oid) for e in events])]
    )
    await conn.execute(
        "UPDATE suppressions SET ended_at = $2, version = version + $3 WHERE suppression_id = $1",
        suppression_id,
        now,
        len(events),
    )


async def list_suppressions(
    conn: db.Connection, oid: str, now: datetime, suppression_id: UUID | None = None
) -> list[SuppressionRow]:
    """The org's suppressions, newest first (or the one named), with what each has held."""
    rows = await conn.fetch(
        "SELECT suppression::text, ended_at, held, last_detection_id, last_detected_at, last_held_at"
        " FROM suppressions WHERE oid = $1 AND ($2::uuid IS NULL OR suppression_id = $2)"
        " ORDER BY created_at DESC, suppression_id",
        oid,
        suppression_id,
    )
    out = []
    for r in rows:
        s = msgspec.structs.replace(_decoder.decode(r[0]), ended_at=r[1])
        active = s.ended_at is None and s.expires_at > now
        counts = {"held": r[2], "last_detection_id": r[3], "last_detected_at": r[4], "last_held_at": r[5]}
        out.append(SuppressionRow(**msgspec.structs.asdict(s), active=active, **counts))
    return out
