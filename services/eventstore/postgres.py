"""Append, read a stream, read the log without gaps, shard by shard.

Gap-free reading: positions come from an identity column, and every append takes its shards'
transaction-scoped advisory locks just before it inserts. Within a shard, a position is therefore
handed out only after every lower position of the shard has committed (or rolled back), so a
reader that reads a shard's `position > last_seen` can never pass over an event that commits late.
The locks are held from the first insert to the commit, which is why callers append last in their
transaction. An event's shard is its org's (migration 0036: `ticketing_shard_of`); with one shard,
the default, this is the single log and its single lock.
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
    shard: int = 0  # the log shard it was appended to (its org's, then)

    @property
    def schema(self) -> int:
        """The version of its document's schema (domain.schema); 1 where none was recorded."""
        return int(self.metadata.get("schema", 1))


_COLUMNS = "position, event_id, stream_id, version, type, data::text, metadata::text, recorded_at, shard"


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
        shard=row[8],
    )


async def append(conn: db.Connection, appends: Iterable[StreamAppend]) -> int:
    """Append to several streams in the caller's transaction; return how many events were written.

    A stream that moved past `expected_version` (or a version gap) raises ConcurrencyError; the
    caller's transaction is then unusable and must be retried from a fresh read.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("append must run inside a transaction")
    appends = list(appends)
    oids = list({e.metadata.get("oid") for a in appends for e in a.events})
    if not oids:
        return 0
    shards = await conn.fetchval(
        "SELECT ticketing_append_locks($1::text[], $2, $3, $4)",
        oids,
        locks.LOG_LAYOUT,
        locks.APPEND,
        locks.SHARDS,
    )
    shard_of = dict(zip(oids, shards, strict=True))
    rows = [
        (
            e.event_id,
            a.stream_id,
            a.expected_version + i,
            e.type,
            e.data.decode(),
            _json.encode(e.metadata).decode(),
            shard_of[e.metadata.get("oid")],
        )
        for a in appends
        for i, e in enumerate(a.events, start=1)
    ]
    try:
        # One COPY: the same constraints and row triggers as INSERT, one statement for the batch
        # (one NOTIFY) instead of one executed per row.
        await conn.copy_records_to_table(
            "events",
            records=rows,
            columns=("event_id", "stream_id", "version", "type", "data", "metadata", "shard"),
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


async def read_all(
    conn: db.Connection, after: int, limit: int, shard: int | None = None, until: int | None = None
) -> list[RecordedEvent]:
    """A shard's events with position in (after, until], in order (see the module docstring for
    why no gaps); without a shard, every shard's, which is gap-free only below a `safe_head`."""
    conditions, args = ["position > $1"], [after, limit]
    if shard is not None:
        args.append(shard)
        conditions.append(f"shard = ${len(args)}")
    if until is not None:
        args.append(until)
        conditions.append(f"position <= ${len(args)}")
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE {' AND '.join(conditions)} ORDER BY position LIMIT $2", *args
    )
    return [_record(r) for r in rows]


async def read_of_orgs(
    conn: db.Connection, shard: int, after: int, until: int, limit: int, oids: Sequence[str]
) -> list[RecordedEvent]:
    """A shard's events in (after, until] of these orgs, in order: a subscriber that handles only
    some orgs' events (a delivery channel: those with a target) reads no others."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE shard = $5 AND position > $1 AND position <= $2"
        " AND metadata->>'oid' = ANY($3::text[]) ORDER BY position LIMIT $4",
        after,
        until,
        list(oids),
        limit,
        shard,
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


async def shard_heads(conn: db.Connection) -> list[int]:
    """Each shard's newest position (log_shard_heads): every lower one of the shard has committed
    or never will."""
    return [r[0] for r in await conn.fetch("SELECT head FROM log_shard_heads ORDER BY shard")]


async def shard_count(conn: db.Connection) -> int:
    """How many shards appends are spread over now (log_layout)."""
    n: int = await conn.fetchval("SELECT shards FROM log_layout")
    return n


async def safe_head(conn: db.Connection) -> int:
    """A position below which every event of every shard has committed or never will: the newest
    one, read while no append is under way (the layout lock, taken for that moment, in a
    transaction of its own: appends wait that long). With one shard, the newest position is that
    already."""
    if conn.is_in_transaction():
        raise RuntimeError("safe_head takes the layout lock for a moment: not inside a transaction")
    async with conn.transaction():
        if await shard_count(conn) > 1:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.LOG_LAYOUT)
        return await head_position(conn)
