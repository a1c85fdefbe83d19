"""Errors the domain raises; adapters map them to HTTP statuses, retries or dead letters."""

from typing import Literal
from uuid import UUID


class DomainError(Exception):
    """Base of every rule violation a caller can provoke."""


class ConcurrencyError(DomainError):
    """The stream moved on since it was read: reload and decide again."""


class StaleTicket(DomainError):
    """A change made against a version of the ticket that is no longer its latest: the client
    decided on what it saw, which someone else has changed meanwhile."""

    def __init__(self, ticket_number: int, expected: int, actual: int) -> None:
        super().__init__(
            f"ticket {ticket_number} changed meanwhile (you saw version {expected}, it is at {actual})"
        )
        self.expected = expected
        self.actual = actual


class TicketNotFound(DomainError):
    pass


class TicketAlreadyExists(DomainError):
    def __init__(self, ticket_id: UUID) -> None:
        super().__init__(f"ticket {ticket_id} already exists")
        self.ticket_id = ticket_id


class DetectionAlreadyLinked(DomainError):
    """A detection id belongs to exactly one ticket of its org."""

    def __init__(self, oid: str, detection_id: str) -> None:
        super().__init__(f"detection {detection_id!r} is already linked to a ticket of org {oid!r}")
        self.oid = oid
        self.detection_id = detection_id


class InvalidTransition(DomainError):
    def __init__(self, current: str, requested: str, allowed: tuple[str, ...]) -> None:
        allowed_text = ", ".join(allowed) if allowed else "none (terminal state)"
        super().__init__(f"cannot move a ticket from {current} to {requested}; allowed: {allowed_text}")
        self.current = current
        self.requested = requested
        self.allowed = allowed


class LimitReached(DomainError):
    """The ticket holds as many of something as its org allows (notes, entities, artifacts)."""


class TicketClosed(DomainError):
    """The ticket is in a terminal state and takes no more changes of this kind."""


DeadLetterReason = Literal[
    "empty", "not_json", "unknown_format", "invalid_field", "invalid_time", "no_org", "nul_character"
]


class DetectionFormatError(DomainError):
    """A message that is not a detection of a known format; the reason names the field, and
    `kind` classes it (a bounded set, for counting dead letters)."""

    def __init__(self, message: str, kind: DeadLetterReason = "invalid_field") -> None:
        super().__init__(message)
        self.kind: DeadLetterReason = kind


class InvalidValue(DomainError):
    """A value breaks a rule of the seed (tag length, IP syntax...); names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class ItemNotFound(DomainError):
    """An entity, telemetry reference, artifact or linked detection the ticket does not have."""


class DuplicateItem(DomainError):
    """The same entity (type + value) or telemetry event (atom + sensor) is already on the ticket."""


class MergeRefused(DomainError):
    """Self-merge, merge into a terminal ticket, or across orgs."""


class OrgUnsubscribed(DomainError):
    """The org was unsubscribed (purged): nothing of it is taken in any more, through any door."""

    def __init__(self, oid: str, reason: str) -> None:
        super().__init__(f"{reason}; its ticket data was purged and nothing of it is taken in")
        self.oid = oid


class NotPurged(DomainError):
    """Only an org whose purge completed can be re-subscribed."""


class DetectionSuppressed(DomainError):
    """A suppression holds the detection: it is kept and counted, and opens no ticket."""

    def __init__(self, detection_id: str, suppression_id: UUID, reason: str) -> None:
        super().__init__(reason)
        self.detection_id = detection_id
        self.suppression_id = suppression_id


class TaskOpen(DomainError):
    """A mandatory task is still open: the ticket cannot be resolved or closed yet (409)."""

    def __init__(self, ticket_number: int, target: str, title: str) -> None:
        super().__init__(f"ticket {ticket_number} cannot be {target}: its mandatory task {title!r} is open")
        self.title = title
