"""The ticket aggregate: decide(command, state, now) -> events and evolve(state, event) -> state."""

from datetime import datetime
from uuid import UUID

import msgspec

from domain.commands import AddNote, LinkDetection, OpenTicket, TicketCommand
from domain.errors import DomainError, TicketAlreadyExists, TicketClosed, TicketNotFound
from domain.events import DetectionAdded, NoteAdded, TicketCreated, TicketEvent
from domain.lifecycle import TERMINAL, Status
from domain.limits import TEXT_MAX
from domain.severity import Severity


class TicketState(msgspec.Struct, frozen=True):
    ticket_id: UUID
    oid: str
    ticket_number: int
    severity: Severity
    created_at: datetime
    status: Status = "new"
    detection_ids: frozenset[str] = frozenset()
    version: int = 0

    @property
    def detection_count(self) -> int:
        return len(self.detection_ids)


def decide(command: TicketCommand, state: TicketState | None, now: datetime) -> list[TicketEvent]:
    match command:
        case OpenTicket():
            if state is not None:
                raise TicketAlreadyExists(f"ticket {command.ticket_id} already exists")
            return [
                TicketCreated(
                    ts=now,
                    ticket_id=command.ticket_id,
                    oid=command.oid,
                    ticket_number=command.ticket_number,
                    severity=command.severity,
                    detection=command.detection,
                )
            ]
        case LinkDetection():
            if state is None:
                raise TicketNotFound(f"ticket {command.ticket_id} does not exist")
            if command.detection.detection_id in state.detection_ids:
                return []  # already linked here: linking is idempotent
            if state.status in TERMINAL:
                raise TicketClosed(f"ticket {state.ticket_number} is {state.status}")
            return [DetectionAdded(ts=now, detection=command.detection)]
        case AddNote():
            if state is None:
                raise TicketNotFound(f"ticket {command.ticket_id} does not exist")
            if not 0 < len(command.content) <= TEXT_MAX:
                raise DomainError(f"a note has 1 to {TEXT_MAX} characters")
            return [
                NoteAdded(
                    ts=now, note_id=command.note_id, content=command.content, note_type=command.note_type
                )
            ]
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


def evolve(state: TicketState | None, event: TicketEvent) -> TicketState:
    match event:
        case TicketCreated():
            ids = frozenset({event.detection.detection_id}) if event.detection else frozenset()
            return TicketState(
                ticket_id=event.ticket_id,
                oid=event.oid,
                ticket_number=event.ticket_number,
                severity=event.severity,
                created_at=event.ts,
                detection_ids=ids,
                version=1,
            )
    if state is None:
        raise ValueError(f"{type(event).__name__} before created")
    match event:
        case DetectionAdded():
            return msgspec.structs.replace(
                state,
                detection_ids=state.detection_ids | {event.detection.detection_id},
                version=state.version + 1,
            )
        case NoteAdded():
            return msgspec.structs.replace(state, version=state.version + 1)
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover


def fold(events: list[TicketEvent], state: TicketState | None = None) -> TicketState | None:
    for event in events:
        state = evolve(state, event)
    return state
