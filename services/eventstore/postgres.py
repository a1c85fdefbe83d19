"""Append, read a stream, read the global log without gaps.

Gap-free global reading: positions come from an identity column, and every append takes one
transaction-scoped advisory lock just before it inserts. A position is therefore handed out only
after every lower position has committed (or rolled back), so a reader that reads
`position > last_seen` can never pass over an event that commits late. The lock is held from
the first insert to the commit, which is why callers append last in their transaction.
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from domain.errors import ConcurrencyError
from services import metrics
from services.eventstore import db, locks

# The database cannot answer now (down, restarting, out of connections, connection lost): worth
# waiting and trying again, unlike an error in the statement itself.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,  # 57P01: a restart or failover ended the session
    asyncpg.CrashShutdownError,  # 57P02
)
# The database refused a value itself (SQLSTATE classes 22 and 54: NUL in text, a number out of
# range, an index entry too large): the input's fault, which no retry mends.
REFUSED_VALUE: tuple[type[Exception], ...] = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)

_json = msgspec.json.Encoder()
_meta_decoder = msgspec.json.Decoder(dict[str, Any])


class NewEvent(msgspec.Struct, frozen=True):
    event_id: UUID
    type: str
    data: bytes  # JSON document of the domain event
    metadata: dict[str, Any]


class StreamAppend(NamedTuple):
    stream_id: UUID
    expected_version: int  # the version the caller decided on; 0 for a new stream
    events: Sequence[NewEvent]


class RecordedEvent(msgspec.Struct, frozen=True):
    position: int
    event_id: UUID
    stream_id: UUID
    version: int
    type: str
    data: str  # JSON text, decoded by whoever knows its type
    metadata: dict[str, Any]
    recorded_at: datetime

    @property
    def schema(self) -> int:
        """The version of its document's schema (domain.schema); 1 where none was recorded."""
        return int(self.metadata.get("schema", 1))


_COLUMNS = "position, event_id, stream_id, version, type, data::text, metadata::text, recorded_at"


def _record(row: asyncpg.Record) -> RecordedEvent:
    return RecordedEvent(
        position=row[0],
        event_id=row[1],
        stream_id=row[2],
        version=row[3],
        type=row[4],
        data=row[5],
        metadata=_meta_decoder.decode(row[6]),
        recorded_at=row[7],
    )


async def append(conn: db.Connection, appends: Iterable[StreamAppend]) -> int:
    """Append to several streams in the caller's transaction; return how many events were written.

    A stream that moved past `expected_version` (or a version gap) raises ConcurrencyError; the
    caller's transaction is then unusable and must be retried from a fresh read.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("append must run inside a transaction")
    rows = [
        (
            e.event_id,
            a.stream_id,
            a.expected_version + i,
            e.type,
            e.data.decode(),
            _json.encode(e.metadata).decode(),
        )
        for a in appends
        for i, e in enumerate(a.events, start=1)
    ]
    if not rows:
        return 0
    await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.APPEND)
    try:
        # One COPY: the same constraints and row triggers as INSERT, one statement for the batch
        # (one NOTIFY) instead of one executed per row.
        await conn.copy_records_to_table(
            "events", records=rows, columns=("event_id", "stream_id", "version", "type", "data", "metadata")
        )
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_stream_version_key":
            raise ConcurrencyError(f"a stream was appended to concurrently: {exc.detail}") from None
        raise
    except asyncpg.SerializationError as exc:
        if exc.hint == "events_version_gap":
            raise ConcurrencyError(str(exc)) from None
        raise
    metrics.EVENTS_APPENDED.inc(len(rows))
    return len(rows)


async def read_stream(conn: db.Connection, stream_id: UUID) -> list[RecordedEvent]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM events WHERE stream_id = $1 ORDER BY version", stream_id)
    return [_record(r) for r in rows]


async def read_streams(conn: db.Connection, first: Mapping[UUID, int]) -> dict[UUID, list[RecordedEvent]]:
    """Each stream's events from version `first[stream]` on (1: the whole stream), in order."""
    found: dict[UUID, list[RecordedEvent]] = {}
    if not first:
        return found
    # LATERAL: one index probe per stream, whatever the planner thinks of the key list. As a plain
    # join it walked the whole (stream_id, version) index per call, growing with the store.
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM unnest($1::uuid[], $2::int[]) AS k(sid, first_version)"
        " CROSS JOIN LATERAL (SELECT * FROM events"
        " WHERE stream_id = k.sid AND version >= k.first_version ORDER BY version) AS e"
        " ORDER BY e.stream_id, e.version",
        list(first),
        list(first.values()),
    )
    for row in rows:
        event = _record(row)
        found.setdefault(event.stream_id, []).append(event)
    return found


class StreamHead(NamedTuple):
    version: int
    metadata: dict[str, Any]  # its last event's


async def read_heads(conn: db.Connection, stream_ids: Sequence[UUID]) -> dict[UUID, StreamHead]:
    """Each existing stream's version and last metadata: enough to append to it without reading
    it (one index probe per stream, as in read_streams)."""
    if not stream_ids:
        return {}
    rows = await conn.fetch(
        "SELECT k.sid, e.version, e.metadata::text FROM unnest($1::uuid[]) AS k(sid)"
        " CROSS JOIN LATERAL (SELECT version, metadata FROM events"
        " WHERE stream_id = k.sid ORDER BY version DESC LIMIT 1) AS e",
        list(stream_ids),
    )
    return {r[0]: StreamHead(r[1], _meta_decoder.decode(r[2])) for r in rows}


async def read_all(conn: db.Connection, after: int, limit: int) -> list[RecordedEvent]:
    """Events with position > after, in global order (see the module docstring for why no gaps)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2", after, limit
    )
    return [_record(r) for r in rows]


async def read_of_orgs(
    conn: db.Connection, after: int, until: int, limit: int, oids: Sequence[str]
) -> list[RecordedEvent]:
    """Events in (after, until] of these orgs, in global order: a subscriber that handles only
    some orgs' events (a delivery channel: those with a target) reads no others."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE position > $1 AND position <= $2"
        " AND metadata->>'oid' = ANY($3::text[]) ORDER BY position LIMIT $4",
        after,
        until,
        list(oids),
        limit,
    )
    return [_record(r) for r in rows]


async def read_excluding(
    conn: db.Connection, after: int, until: int, limit: int, types: Sequence[str]
) -> list[RecordedEvent]:
    """Events in (after, until] of none of these types, in global order: a rebuild's pass over
    the log up to the head it fixed, for the events it did not load in bulk."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE position > $1 AND position <= $2 AND type <> ALL($3::text[])"
        " ORDER BY position LIMIT $4",
        after,
        until,
        list(types),
        limit,
    )
    return [_record(r) for r in rows]


async def head_position(conn: db.Connection) -> int:
    position: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
    return position
