"""One batch of detection messages: parse, dead-letter the bad, dedup and create tickets in one transaction.

Kept free of faust so the same code is exercised by tests, benchmarks and the faust agent.
"""

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg
import msgspec

from domain.detections import Detection, parse_detection
from domain.errors import ConcurrencyError, DetectionAlreadyLinked, DetectionFormatError
from domain.severity import severity_for
from services.handlers import (
    CommandContext,
    CommandHandler,
    NewTicket,
    claimed_detections,
    open_tickets,
    ticket_id_for_detection,
)

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


class DeadLetter(msgspec.Struct, frozen=True):
    """Value of a `detections.deadletter` message. `value_b64` holds the original bytes exactly;
    `value` repeats them as text when they are UTF-8, for people reading the topic."""

    error: str
    source: SourceRef
    key: str | None
    value: str | None
    value_b64: str


class BatchResult(msgspec.Struct):
    tickets_created: int = 0
    duplicates: int = 0
    dead_letters: int = 0


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
    value = record.value or b""
    return _dead_letter_encoder.encode(
        DeadLetter(
            error=error,
            source=SourceRef(record.topic, record.partition, record.offset, record.timestamp_ms),
            key=_text(record.key),
            value=_text(record.value),
            value_b64=base64.b64encode(value).decode(),
        )
    )


def parse_batch(
    records: Sequence[RawRecord], default_oid: str | None, arrival: datetime
) -> tuple[list[tuple[Detection, RawRecord]], list[tuple[bytes | None, bytes]]]:
    good: list[tuple[Detection, RawRecord]] = []
    bad: list[tuple[bytes | None, bytes]] = []
    for record in records:
        try:
            if record.value is None:
                raise DetectionFormatError("empty message (no value)")
            key_oid = org_from_key(record.key) or default_oid
            good.append((parse_detection(record.value, key_oid=key_oid, arrival=arrival), record))
        except DetectionFormatError as exc:
            bad.append((record.key, dead_letter(record, str(exc))))
    return good, bad


async def _create_tickets(
    conn: asyncpg.Connection, handler: CommandHandler, parsed: list[tuple[Detection, RawRecord]]
) -> tuple[int, int]:
    unique: dict[tuple[str, str], tuple[Detection, RawRecord]] = {}
    for detection, record in parsed:
        unique.setdefault((detection.oid, detection.detection_id), (detection, record))
    seen = await claimed_detections(conn, list(unique))
    new = [
        NewTicket(
            ticket_id=ticket_id_for_detection(d.oid, d.detection_id),
            oid=d.oid,
            severity=severity_for(d.detection_priority),
            detection=d,
            ctx=CommandContext(
                actor=INGEST_ACTOR,
                correlation_id=f"detection:{d.oid}/{d.detection_id}",
                causation_id=f"kafka:{record.topic}/{record.partition}@{record.offset}",
            ),
        )
        for key, (d, record) in unique.items()
        if key not in seen
    ]
    if new:
        await open_tickets(conn, handler, new)
    return len(new), len(parsed) - len(new)


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
    parsed, bad = parse_batch(records, default_oid, handler.clock())
    if bad:
        await send_dead_letters(bad)
    if not parsed:
        return BatchResult(dead_letters=len(bad))
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                created, duplicates = await _create_tickets(conn, handler, parsed)
            return BatchResult(created, duplicates, len(bad))
        except (ConcurrencyError, DetectionAlreadyLinked, asyncpg.DeadlockDetectedError) as exc:
            log.info("ingest batch conflicted (%s), attempt %d; retrying", exc, attempt)
            await asyncio.sleep(0.01 * attempt)
    raise RuntimeError(f"ingest batch still conflicting after {MAX_ATTEMPTS} attempts")
