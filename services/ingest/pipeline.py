"""One batch of detection messages: parse, dead-letter the bad, dedup and create tickets in one transaction.

Kept free of faust so the same code is exercised by tests, benchmarks and the faust agent.
"""

import base64
import gzip
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import NamedTuple

import asyncpg
import msgspec

from domain.commands import CountDuplicates, LinkDetection, TicketCommand
from domain.detections import Detection, parse_detection
from domain.errors import ConcurrencyError, DetectionAlreadyLinked, DetectionFormatError
from domain.grouping import GroupCandidate, choose, full, group_key
from domain.severity import severity_for
from services import metrics
from services.commands.configs import load_configs
from services.commands.handlers import (
    GROUP_LOCKS,
    CommandContext,
    CommandHandler,
    NewTicket,
    advisory_locks,
    claimed_detections,
    open_tickets,
    retrying,
    ticket_id_for_detection,
)
from services.commands.org_purge import purged_orgs
from services.eventstore import postgres as store
from services.kafka.topics import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

INGEST_ACTOR = "system:ingest"
MAX_ATTEMPTS = 10


class RawRecord(msgspec.Struct, frozen=True):
    """A message as it came off the detections topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


class SourceRef(msgspec.Struct, frozen=True):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


class DeadLetter(msgspec.Struct, frozen=True, omit_defaults=True):
    """Value of a `detections.deadletter` message. `value_b64` holds the original bytes exactly;
    `value` repeats them as text when they are UTF-8, for people reading the topic. A letter that
    would outweigh a message (MAX_MESSAGE_BYTES) drops `value`, then carries the bytes gzipped
    (`value_gzip_b64`), and if even that is too large none of them: `source` still points at the
    original in its topic."""

    error: str
    source: SourceRef
    key: str | None
    value: str | None
    value_b64: str | None
    value_gzip_b64: str | None = None
    value_bytes: int | None = None  # the original's size, given whenever `value` is left out


class BatchResult(msgspec.Struct):
    tickets_created: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    grouped: int = 0
    reasons: dict[str, int] = msgspec.field(default_factory=dict)  # dead letters by reason
    dropped: int = 0  # detections of unsubscribed (purged) orgs


class Rejected(NamedTuple):
    """A message that is not a detection: its dead letter, and why (DeadLetterReason)."""

    key: bytes | None
    letter: bytes
    kind: str


DeadLetterSink = Callable[[Sequence[tuple[bytes | None, bytes]]], Awaitable[None]]
_dead_letter_encoder = msgspec.json.Encoder()


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def org_from_key(key: bytes | None) -> str | None:
    """Message keys are `<oid>[/<category>/<sensor>]`; the org is the part before the first `/`."""
    text = _text(key)
    return text.split("/", 1)[0] or None if text else None


def dead_letter(record: RawRecord, error: str) -> bytes:
    """The letter, never larger than a message: one the producer refused failed its batch on every
    re-delivery (a 600 KB malformed detection made a 1.4 MB letter)."""
    value = record.value or b""
    source = SourceRef(record.topic, record.partition, record.offset, record.timestamp_ms)
    key = _text(record.key)
    letter = _dead_letter_encoder.encode(
        DeadLetter(error, source, key, _text(record.value), base64.b64encode(value).decode())
    )
    if len(letter) <= MAX_MESSAGE_BYTES:
        return letter
    size = len(value)
    for smaller in (
        DeadLetter(error, source, key, None, base64.b64encode(value).decode(), value_bytes=size),
        DeadLetter(error, source, key, None, None, base64.b64encode(gzip.compress(value)).decode(), size),
    ):
        letter = _dead_letter_encoder.encode(smaller)
        if len(letter) <= MAX_MESSAGE_BYTES:
            return letter
    return _dead_letter_encoder.encode(DeadLetter(error, source, key, None, None, value_bytes=size))


def parse_batch(
    records: Sequence[RawRecord], default_oid: str | None, arrival: datetime
) -> tuple[list[tuple[Detection, RawRecord]], list[Rejected]]:
    good: list[tuple[Detection, RawRecord]] = []
    bad: list[Rejected] = []
    for record in records:
        try:
            if record.value is None:
                raise DetectionFormatError("empty message (no value)", "empty")
            key_oid = org_from_key(record.key) or default_oid
            good.append((parse_detection(record.value, key_oid=key_oid, arrival=arrival), record))
        except DetectionFormatError as exc:
            bad.append(Rejected(record.key, dead_letter(record, str(exc)), exc.kind))
    return good, bad


async def _group_candidates(
    conn: asyncpg.Connection, keys: list[tuple[str, str]], since: datetime, until: datetime
) -> dict[tuple[str, str], list[GroupCandidate]]:
    # A range scan of the lookup index per key (LATERAL with ORDER BY is never flattened into a
    # join that could hash the whole index; see claimed_detections). The index holds the key's
    # first 256 characters (migration 0012).
    rows = await conn.fetch(
        "SELECT k.oid, k.group_key, g.ticket_id, g.first_detected_at, g.detection_count"
        " FROM unnest($1::text[], $2::text[]) AS k(oid, group_key)"
        " CROSS JOIN LATERAL (SELECT ticket_id, first_detected_at, detection_count FROM grouping_index"
        " WHERE open AND oid = k.oid AND left(group_key, 256) = left(k.group_key, 256)"
        " AND group_key = k.group_key"
        " AND first_detected_at > $3 AND first_detected_at <= $4 ORDER BY first_detected_at) AS g",
        [k[0] for k in keys],
        [k[1] for k in keys],
        since,
        until,
    )
    found: dict[tuple[str, str], list[GroupCandidate]] = {}
    for r in rows:
        found.setdefault((r[0], r[1]), []).append(GroupCandidate(r[2], r[3], r[4]))
    return found


def _context(d: Detection, record: RawRecord) -> CommandContext:
    return CommandContext(
        actor=INGEST_ACTOR,
        correlation_id=f"detection:{d.oid}/{d.detection_id}",
        causation_id=f"kafka:{record.topic}/{record.partition}@{record.offset}",
        read_at=(record.topic, record.partition, record.offset),
    )


async def _read_offsets(
    conn: asyncpg.Connection, parsed: list[tuple[Detection, RawRecord]]
) -> dict[tuple[str, int], int]:
    """How far the ingest had read each partition of the batch: a message at or before that offset
    was ingested already (a redelivery after a crash, a replay by a new consumer group). The rows
    stay locked until the batch commits, taken in order before any other lock of the batch, so a
    batch and a stale copy of it (the previous owner of a partition after a rebalance) are decided
    one after the other."""
    partitions = sorted({(r.topic, r.partition) for _, r in parsed})
    rows = await conn.fetch(
        "INSERT INTO ingest_read_offsets (topic, partition, read_offset)"
        " SELECT t, p, -1 FROM unnest($1::text[], $2::int[]) AS u(t, p)"
        " ON CONFLICT (topic, partition) DO UPDATE SET read_offset = ingest_read_offsets.read_offset"
        " RETURNING topic, partition, read_offset",
        [t for t, _ in partitions],
        [p for _, p in partitions],
    )
    return {(r[0], r[1]): r[2] for r in rows}


async def _advance(
    conn: asyncpg.Connection, parsed: list[tuple[Detection, RawRecord]], read: dict[tuple[str, int], int]
) -> None:
    ends = dict(read)
    for _, r in parsed:
        if r.offset > ends[(r.topic, r.partition)]:
            ends[(r.topic, r.partition)] = r.offset
    moved = [(t, p, end) for (t, p), end in ends.items() if end > read[(t, p)]]
    if moved:
        await conn.executemany(
            "UPDATE ingest_read_offsets SET read_offset = $3 WHERE topic = $1 AND partition = $2", moved
        )


async def _create_tickets(
    conn: asyncpg.Connection, handler: CommandHandler, parsed: list[tuple[Detection, RawRecord]]
) -> tuple[int, int, int, int]:
    """Decide, in message order, a new ticket or the open ticket to join for each new detection,
    and count the re-sends of known ones. The detections of an unsubscribed org are dropped (checked
    in this transaction: a purge that committed its tombstone is seen)."""
    read = await _read_offsets(conn, parsed)
    gone = await purged_orgs(conn, list({d.oid for d, _ in parsed}))
    kept = [(d, r) for d, r in parsed if d.oid not in gone] if gone else parsed
    unique: dict[tuple[str, str], tuple[Detection, RawRecord]] = {}
    for detection, record in kept:
        unique.setdefault((detection.oid, detection.detection_id), (detection, record))
    configs = await load_configs(conn, {oid for oid, _ in unique})
    keyed = [(d, r, group_key(d, configs[d.oid])) for d, r in unique.values()]
    grouping = sorted({(d.oid, k) for d, _, k in keyed if configs[d.oid].auto_grouping_enabled})
    # One writer per group key at a time, so that two workers, or a worker and the re-delivery of
    # its own batch, can never open two tickets for one group window.
    await advisory_locks(conn, [f"{oid}\x1f{key}" for oid, key in grouping], GROUP_LOCKS)
    owners = await claimed_detections(conn, list(unique))  # after the locks: sees a racing worker's work
    known = set(owners)
    fresh = [(d, r, k) for d, r, k in keyed if (d.oid, d.detection_id) not in known]
    candidates: dict[tuple[str, str], list[GroupCandidate]] = {}
    if grouping and fresh:
        widest = timedelta(minutes=max(configs[oid].grouping_window_minutes for oid, _ in grouping))
        times = [d.detected_at for d, _, _ in fresh]
        candidates = await _group_candidates(conn, grouping, min(times) - widest, max(times))
    new: list[NewTicket] = []
    joins: list[tuple[TicketCommand, CommandContext]] = []
    for d, record, key in fresh:
        config = configs[d.oid]
        severity = severity_for(d.detection_priority, config.severity_mapping)
        continues, group = None, None
        if config.auto_grouping_enabled:
            group = candidates.setdefault((d.oid, key), [])
            chosen = choose(group, d, config)
            if chosen is not None:
                joins.append((LinkDetection(chosen.ticket_id, d, severity), _context(d, record)))
                owners[(d.oid, d.detection_id)] = chosen.ticket_id
                chosen.detection_count += 1
                continue
            capped = full(group, d, config)
            continues = capped.ticket_id if capped else None
        ticket_id = ticket_id_for_detection(d.oid, d.detection_id)  # only for a new ticket: uuid5 is dear
        if group is not None:
            group.append(GroupCandidate(ticket_id, d.detected_at, 1))
        new.append(NewTicket(ticket_id, d.oid, severity, d, _context(d, record), key, continues))
        owners[(d.oid, d.detection_id)] = ticket_id
    counted = _resends(kept, owners, known, read) if known or len(unique) < len(kept) else {}
    now = handler.clock()
    recount = [
        (CountDuplicates(tid, n, now), CommandContext(actor=INGEST_ACTOR)) for tid, n in counted.items()
    ]
    await _advance(conn, parsed, read)
    if new or joins or recount:
        await open_tickets(conn, handler, new, [*joins, *recount])
    return len(new), len(joins), len(kept) - len(new) - len(joins), len(parsed) - len(kept)


def _resends(
    parsed: list[tuple[Detection, RawRecord]],
    owners: dict[tuple[str, str], uuid.UUID],
    known: set[tuple[str, str]],
    read: dict[tuple[str, int], int],
) -> dict[uuid.UUID, int]:
    """The re-sends in this batch, per ticket: every message of an id that a ticket held before
    the batch, and every one after the first of an id new in it; but none that its partition had
    been read past already (a redelivery counts nothing), nor one message twice."""
    counted: dict[uuid.UUID, int] = {}
    first: set[tuple[str, str]] = set()  # ids new in this batch, past the message that placed them
    at: set[tuple[str, int, int]] = set()
    for d, record in parsed:
        key = (d.oid, d.detection_id)
        if key not in known and key not in first:
            first.add(key)
            continue
        position = (record.topic, record.partition, record.offset)
        if record.offset <= read[position[:2]] or position in at:
            continue
        at.add(position)
        ticket_id = owners[key]
        counted[ticket_id] = counted.get(ticket_id, 0) + 1
    return counted


async def ingest_batch(
    pool: asyncpg.Pool,
    handler: CommandHandler,
    records: Sequence[RawRecord],
    send_dead_letters: DeadLetterSink,
    *,
    default_oid: str | None,
) -> BatchResult:
    """Dead-letter what is not a detection, then create the tickets of the new ones in one transaction.

    Idempotent: a detection id already in the org's detection index creates nothing, so a batch
    re-delivered after a crash (at-least-once) writes no event twice. A concurrent worker racing
    on the same detection makes this transaction fail on the index's unique key; it is retried.
    """
    started = time.perf_counter()
    parsed, bad = parse_batch(records, default_oid, handler.clock())
    if bad:
        await send_dead_letters([(r.key, r.letter) for r in bad])
    result = await _store(pool, handler, parsed, send_dead_letters) if parsed else BatchResult()
    result.dead_letters += len(bad)
    for r in bad:
        result.reasons[r.kind] = result.reasons.get(r.kind, 0) + 1
    count(result, len(records), time.perf_counter() - started)
    return result


def count(result: BatchResult, size: int, seconds: float) -> None:
    """The batch in the process's metrics, once it is stored (a batch retried after an outage
    counts once)."""
    metrics.CONSUMED.inc(size)
    metrics.TICKETED.inc(result.tickets_created)
    metrics.GROUPED.inc(result.grouped)
    metrics.DEDUPLICATED.inc(result.duplicates)
    metrics.DROPPED.inc(result.dropped)
    for reason, n in result.reasons.items():
        metrics.DEAD_LETTERED.labels(reason).inc(n)
    metrics.BATCH_SIZE.observe(size)
    metrics.BATCH_SECONDS.observe(seconds)


async def _store(
    pool: asyncpg.Pool,
    handler: CommandHandler,
    parsed: list[tuple[Detection, RawRecord]],
    send_dead_letters: DeadLetterSink,
) -> BatchResult:
    """Store the batch; if the database refuses a value in it (which the parser's checks should
    have caught), halve it until the detection at fault is found and dead-letter that one. Else one
    bad detection would fail its whole batch on every re-delivery and stop the partition."""
    try:
        created, grouped, duplicates, dropped = await retrying(
            pool,
            lambda conn: _create_tickets(conn, handler, parsed),
            attempts=MAX_ATTEMPTS,
            retry_on=(ConcurrencyError, DetectionAlreadyLinked, asyncpg.DeadlockDetectedError),
            pause_s=0.01,
        )
        return BatchResult(created, duplicates, 0, grouped, dropped=dropped)
    except store.REFUSED_VALUE as exc:
        if len(parsed) == 1:
            [(detection, record)] = parsed
            log.error("ingest: the database refused detection %s: %s", detection.detection_id, exc)
            await send_dead_letters([(record.key, dead_letter(record, f"the database refused it: {exc}"))])
            return BatchResult(dead_letters=1, reasons={"database_refused": 1})
    middle = len(parsed) // 2
    first = await _store(pool, handler, parsed[:middle], send_dead_letters)
    second = await _store(pool, handler, parsed[middle:], send_dead_letters)
    return BatchResult(
        first.tickets_created + second.tickets_created,
        first.duplicates + second.duplicates,
        first.dead_letters + second.dead_letters,
        first.grouped + second.grouped,
        {k: first.reasons.get(k, 0) + second.reasons.get(k, 0) for k in {*first.reasons, *second.reasons}},
        first.dropped + second.dropped,
    )
