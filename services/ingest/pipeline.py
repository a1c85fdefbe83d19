"""One batch of detection messages: parse, dead-letter the bad, dedup and create tickets in one transaction.

Kept free of faust so the same code is exercised by tests, benchmarks and the faust agent.
"""

import base64
import gzip
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import NamedTuple

import asyncpg
import msgspec

from domain.detections import Detection, parse_detection
from domain.errors import DetectionFormatError
from domain.intake import Arrival
from services import metrics
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler
from services.commands.intake import INGEST_ACTOR, RACES, take_in
from services.commands.unit_of_work import retrying
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.placement import Placement, at_once
from services.kafka.topics import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

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
    updated: int = 0  # known ExtraHop detections sent again with new content
    suppressed: int = 0  # held by a suppression
    reopened: int = 0  # recurred on a resolved ticket and reopened it


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


def _context(a: Arrival) -> CommandContext:
    assert a.detection is not None and a.position is not None  # what the Kafka door gives
    topic, partition, offset = a.position
    return CommandContext(
        actor=INGEST_ACTOR,
        correlation_id=f"detection:{a.oid}/{a.detection.detection_id}",
        causation_id=f"kafka:{topic}/{partition}@{offset}",
        read_at=a.position,
    )


async def _create_tickets(
    conn: db.Connection, handler: CommandHandler, parsed: list[tuple[Detection, RawRecord]]
) -> BatchResult:
    """The batch through the one intake: new tickets, detections grouped into open ones, re-sends
    counted, updates of known ExtraHop detections applied; the detections of an unsubscribed org
    are dropped (checked in this transaction: a purge that committed its tombstone is seen)."""
    arrivals = [Arrival(d.oid, "kafka", d, position=(r.topic, r.partition, r.offset)) for d, r in parsed]
    fates, *_ = await take_in(conn, handler, arrivals, lambda at: _context(arrivals[at]))
    kinds = Counter(f.kind for f in fates)
    return BatchResult(
        tickets_created=kinds["opened"],
        duplicates=kinds["counted"] + kinds["redelivered"],
        grouped=kinds["joined"],
        dropped=kinds["refused"] + kinds["dropped"],
        updated=kinds["updated"],
        suppressed=kinds["suppressed"],
        reopened=kinds["reopened"],
    )


async def ingest_batch(
    where: Placement | db.Pool,
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
    With orgs placed on several databases, each database takes its orgs' share of the batch in a
    transaction of its own, at once; a share that failed is re-delivered with the batch and the
    shares already committed create nothing twice.
    """
    started = time.perf_counter()
    placement = where if isinstance(where, Placement) else Placement.single(where)
    parsed, bad = parse_batch(records, default_oid, handler.clock())
    if bad:
        await send_dead_letters([(r.key, r.letter) for r in bad])
    result = BatchResult()
    if parsed:
        shares = placement.split(parsed, lambda p: p[0].oid)
        for part in await at_once(_store(pool, handler, share, send_dead_letters) for pool, share in shares):
            result = merged(result, part)
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
    metrics.SUPPRESSED.inc(result.suppressed)
    metrics.REOPENED.inc(result.reopened)
    for reason, n in result.reasons.items():
        metrics.DEAD_LETTERED.labels(reason).inc(n)
    metrics.BATCH_SIZE.observe(size)
    metrics.BATCH_SECONDS.observe(seconds)


async def _store(
    pool: db.Pool,
    handler: CommandHandler,
    parsed: list[tuple[Detection, RawRecord]],
    send_dead_letters: DeadLetterSink,
) -> BatchResult:
    """Store the batch; if the database refuses a value in it (which the parser's checks should
    have caught), halve it until the detection at fault is found and dead-letter that one. Else one
    bad detection would fail its whole batch on every re-delivery and stop the partition."""
    try:
        return await retrying(
            pool,
            lambda conn: _create_tickets(conn, handler, parsed),
            attempts=MAX_ATTEMPTS,
            retry_on=(*RACES, asyncpg.DeadlockDetectedError),
            pause_s=0.01,
        )
    except store.REFUSED_VALUE as exc:
        if len(parsed) == 1:
            [(detection, record)] = parsed
            log.error("ingest: the database refused detection %s: %s", detection.detection_id, exc)
            await send_dead_letters([(record.key, dead_letter(record, f"the database refused it: {exc}"))])
            return BatchResult(dead_letters=1, reasons={"database_refused": 1})
    middle = len(parsed) // 2
    first = await _store(pool, handler, parsed[:middle], send_dead_letters)
    return merged(first, await _store(pool, handler, parsed[middle:], send_dead_letters))


def merged(first: BatchResult, second: BatchResult) -> BatchResult:
    """Two parts' results as one batch's (every count, each reason)."""
    reasons = dict(Counter(first.reasons) + Counter(second.reasons))
    counts = {
        f: getattr(first, f) + getattr(second, f) for f in BatchResult.__struct_fields__ if f != "reasons"
    }
    return BatchResult(reasons=reasons, **counts)
