"""A ticket's row in the `tickets` read table, and the one place it is computed from a ticket's
state: the projection's writers keep the same row event by event (a property test on a real
database holds them to this), and the API's wire view of a ticket is built from it."""

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.config import SlaTarget
from domain.detections import Detection
from domain.severity import SEVERITY_RANK, Severity
from domain.sla import next_deadline
from domain.ticket import TicketState


class TicketFields(msgspec.Struct, frozen=True):
    """What the API shows of a ticket's row (its wire view adds the SLA deadlines), in the order
    of API.md's ticket."""

    ticket_id: UUID
    ticket_number: int
    oid: str
    status: str
    severity: str
    classification: str
    assignee: str | None
    escalation_group: str | None
    investigation_id: str | None
    external_ticket_id: str | None
    external_ticket_url: str | None
    summary: str | None
    conclusion: str | None
    tags: list[str]
    detection_count: int
    detection_id: str | None  # the columns of its first detection
    detection_cat: str | None
    detection_source: str | None
    detection_priority: int | None
    sensor_id: str | None
    hostname: str | None
    created_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    merged_into_ticket_id: UUID | None
    updated_at: datetime
    duplicate_count: int  # its detection ids sent again (re-sends; a redelivery counts nothing)
    last_seen_at: datetime | None  # the last such re-send
    related_ticket_numbers: list[int]  # linked by a recurrence, or split from or off it


class TicketRow(TicketFields, frozen=True):
    """Every column of `tickets`: what the API shows, and what the queue's sorting, filtering,
    the scheduler and the reports read."""

    severity_rank: int
    tags_folded: list[str]  # what the tag filter matches (casefolded)
    status_changed_at: datetime | None
    mtta_breached_at: datetime | None
    mttr_breached_at: datetime | None
    mtta_at_risk_at: datetime | None
    mttr_at_risk_at: datetime | None
    escalated: bool
    escalation_steps: int  # of its escalation policy, taken (the scheduler's next step)
    sla_due_at: datetime | None  # its running clock's deadline (domain.sla.next_deadline)


COLUMNS = TicketRow.__struct_fields__
# The columns a ticket takes from its first detection (the detection's fields of the same names).
FIRST_DETECTION = (
    "detection_id",
    "detection_cat",
    "detection_source",
    "detection_priority",
    "sensor_id",
    "hostname",
)


def first_detection_columns(d: Detection | None) -> tuple[Any, ...]:
    return tuple(getattr(d, f) for f in FIRST_DETECTION) if d is not None else (None,) * len(FIRST_DETECTION)


def ticket_row(s: TicketState, sla: Mapping[Severity, SlaTarget] | None = None) -> TicketRow:
    """The row of a ticket's state; `sla_due_at` needs its org's targets (None without them)."""
    return TicketRow(
        ticket_id=s.ticket_id,
        oid=s.oid,
        ticket_number=s.ticket_number,
        status=s.status,
        severity=s.severity,
        severity_rank=SEVERITY_RANK[s.severity],
        classification=s.classification,
        assignee=s.assignee,
        escalation_group=s.escalation_group,
        investigation_id=s.investigation_id,
        external_ticket_id=s.external_ticket_id,
        external_ticket_url=s.external_ticket_url,
        summary=s.summary,
        conclusion=s.conclusion,
        tags=list(s.tags),
        tags_folded=[t.casefold() for t in s.tags],
        detection_count=s.detection_count,
        **dict(zip(FIRST_DETECTION, first_detection_columns(s.first_detection), strict=True)),
        created_at=s.created_at,
        acknowledged_at=s.acknowledged_at,
        resolved_at=s.resolved_at,
        closed_at=s.closed_at,
        merged_into_ticket_id=s.merged_into_ticket_id,
        updated_at=s.updated_at,
        status_changed_at=s.status_changed_at,
        mtta_breached_at=s.mtta_breached_at,
        mttr_breached_at=s.mttr_breached_at,
        mtta_at_risk_at=s.mtta_at_risk_at,
        mttr_at_risk_at=s.mttr_at_risk_at,
        escalated=s.escalated,
        escalation_steps=s.escalation_steps,
        sla_due_at=next_deadline(s.status, s.created_at, s.acknowledged_at, s.resolved_at, sla[s.severity])
        if sla is not None
        else None,
        duplicate_count=s.duplicate_count,
        last_seen_at=s.last_seen_at,
        related_ticket_numbers=list(s.related_ticket_numbers),
    )
