"""Ticket events: the audit trail. Tags are the seed's audit event names and never change."""

from datetime import datetime
from uuid import UUID

import msgspec

from domain.detections import Detection
from domain.notes import NoteType
from domain.severity import Severity


class _Event(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    ts: datetime


class TicketCreated(_Event, tag="created", frozen=True):
    ticket_id: UUID
    oid: str
    ticket_number: int
    severity: Severity
    detection: Detection | None = None


class DetectionAdded(_Event, tag="detection_added", frozen=True):
    detection: Detection


class NoteAdded(_Event, tag="note_added", frozen=True):
    note_id: UUID
    content: str
    note_type: NoteType


TicketEvent = TicketCreated | DetectionAdded | NoteAdded

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[TicketEvent] = msgspec.json.Decoder(TicketEvent)


def event_type(event: TicketEvent) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def encode_event(event: TicketEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str) -> TicketEvent:
    return _decoder.decode(data)


def event_details(event: TicketEvent) -> dict[str, object]:
    """The event-specific fields, as the webhook/timeline `metadata` shows them."""
    details: dict[str, object] = msgspec.to_builtins(event)
    details.pop("type", None)
    details.pop("ts", None)
    return details
