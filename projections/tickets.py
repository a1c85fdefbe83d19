"""The `tickets` and `ticket_detections` read tables.

Consecutive events of one type are written with one executemany per statement, so a batch of
thousands of new tickets costs a handful of round trips.
"""

from collections.abc import Callable
from itertools import groupby
from typing import Any

import asyncpg

from domain.detections import Detection
from domain.events import DetectionAdded, TicketCreated, TicketEvent, decode_event
from domain.severity import SEVERITY_RANK
from services.eventstore.postgres import RecordedEvent

_INSERT_TICKET = """
INSERT INTO tickets (
    ticket_id, oid, ticket_number, status, severity, severity_rank, detection_count,
    detection_id, detection_cat, detection_source, detection_priority, sensor_id, hostname,
    created_at, updated_at)
VALUES ($1, $2, $3, 'new', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
ON CONFLICT (ticket_id) DO NOTHING
"""

_INSERT_DETECTION = """
INSERT INTO ticket_detections (
    ticket_id, detection_id, oid, detection_cat, detection_source, detection_priority,
    sensor_id, hostname, detected_at, source_format, linked_at, position)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (ticket_id, detection_id) DO NOTHING
"""

_TOUCH = "UPDATE tickets SET updated_at = greatest(updated_at, $2) WHERE ticket_id = $1"

_COUNT_DETECTION = """
UPDATE tickets SET detection_count = detection_count + 1, updated_at = greatest(updated_at, $2)
WHERE ticket_id = $1
"""

Row = tuple[Any, ...]


def _detection_row(e: RecordedEvent, d: Detection, linked_at: Any) -> Row:
    return (
        e.stream_id, d.detection_id, d.oid, d.detection_cat, d.detection_source, d.detection_priority,
        d.sensor_id, d.hostname, d.detected_at, d.source_format, linked_at, e.position,
    )  # fmt: skip


def _ticket_row(e: RecordedEvent, ev: TicketCreated) -> Row:
    d = ev.detection
    return (
        ev.ticket_id, ev.oid, ev.ticket_number, ev.severity, SEVERITY_RANK[ev.severity],
        1 if d else 0,
        d.detection_id if d else None, d.detection_cat if d else None,
        d.detection_source if d else None, d.detection_priority if d else None,
        d.sensor_id if d else None, d.hostname if d else None,
        ev.ts,
    )  # fmt: skip


def _created(run: list[tuple[RecordedEvent, Any]]) -> list[tuple[str, list[Row]]]:
    tickets = [_ticket_row(e, ev) for e, ev in run]
    detections = [_detection_row(e, ev.detection, ev.ts) for e, ev in run if ev.detection is not None]
    return [(_INSERT_TICKET, tickets), (_INSERT_DETECTION, detections)]


def _detection_added(run: list[tuple[RecordedEvent, Any]]) -> list[tuple[str, list[Row]]]:
    return [
        (_INSERT_DETECTION, [_detection_row(e, ev.detection, ev.ts) for e, ev in run]),
        (_COUNT_DETECTION, [(e.stream_id, ev.ts) for e, ev in run]),
    ]


def _touched(run: list[tuple[RecordedEvent, Any]]) -> list[tuple[str, list[Row]]]:
    """Events that change no column of this model still mark the ticket as recently active."""
    return [(_TOUCH, [(e.stream_id, ev.ts) for e, ev in run])]


# Per event type: the statements for a run of consecutive events of that type, in order.
_WRITERS: dict[type[Any], Callable[[list[tuple[RecordedEvent, Any]]], list[tuple[str, list[Row]]]]] = {
    TicketCreated: _created,
    DetectionAdded: _detection_added,
}


class TicketsProjection:
    name: str = "projection:tickets"
    tables: tuple[str, ...] = ("tickets", "ticket_detections")

    async def apply(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        decoded: list[tuple[RecordedEvent, TicketEvent]] = [(e, decode_event(e.data)) for e in events]
        for kind, run in groupby(decoded, key=lambda pair: type(pair[1])):
            writer = _WRITERS.get(kind, _touched)
            for sql, rows in writer(list(run)):
                if rows:
                    # executemany runs rows in order: two increments of one ticket both land.
                    await conn.executemany(sql, rows)
