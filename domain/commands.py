"""Commands on the ticket aggregate. Identity and numbering are decided by the caller (they need I/O)."""

from uuid import UUID

import msgspec

from domain.detections import Detection
from domain.notes import NoteType
from domain.severity import Severity


class _Command(msgspec.Struct, frozen=True, tag_field="command"):
    ticket_id: UUID


class OpenTicket(_Command, tag="open_ticket", frozen=True):
    oid: str
    ticket_number: int
    severity: Severity
    detection: Detection | None = None


class LinkDetection(_Command, tag="link_detection", frozen=True):
    detection: Detection


class AddNote(_Command, tag="add_note", frozen=True):
    note_id: UUID
    content: str
    note_type: NoteType = "general"


TicketCommand = OpenTicket | LinkDetection | AddNote
