"""Ticket events: the audit trail. Tags are the seed's audit event names and never change."""

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.config import ConfigUpdated
from domain.detections import Detection
from domain.evidence import Artifact, Entity, Telemetry
from domain.grouping import Grouping
from domain.lifecycle import Status
from domain.notes import NoteType
from domain.schema import schema_version, upcast
from domain.severity import Severity
from domain.sla import SlaKind
from domain.suppressions import DetectionsSuppressed, SuppressionCreated, SuppressionEnded
from domain.tasks import Task


class _Event(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=False):
    ts: datetime


class TicketCreated(_Event, tag="created", frozen=True):
    ticket_id: UUID
    oid: str
    ticket_number: int
    severity: Severity
    detection: Detection | None = None
    group_key: str | None = None  # the auto-grouping key this ticket collects detections under
    continues_ticket_id: UUID | None = None  # the group's previous ticket, when it reached the cap
    grouping: Grouping | None = None  # the rule, key values and window that grouped its detection
    related_ticket_id: UUID | None = None  # the resolved ticket its detection recurred on
    related_ticket_number: int | None = None


class StatusChanged(_Event, tag="status_changed", frozen=True):
    from_status: Status
    to_status: Status


class Acknowledged(_Event, tag="acknowledged", frozen=True):
    pass


class Resolved(_Event, tag="resolved", frozen=True):
    pass


class Closed(_Event, tag="closed", frozen=True):
    pass


class Reopened(_Event, tag="reopened", frozen=True):
    detection_id: str | None = None  # the recurring detection that reopened it (recurrence `reopen`)


class Assigned(_Event, tag="assigned", frozen=True):
    old_assignee: str | None
    assignee: str | None


class Escalated(_Event, tag="escalated", frozen=True):
    old_escalation_group: str | None
    escalation_group: str | None


class Classified(_Event, tag="classified", frozen=True):
    old_classification: str
    classification: str


class InvestigationLinked(_Event, tag="investigation_linked", frozen=True):
    old_investigation_id: str | None
    investigation_id: str | None


class ExternalTicketLinked(_Event, tag="external_ticket_linked", frozen=True):
    """Not one of the seed's 27: the ExtraHop seed's ticket tracking (the issue in a work-tracker)."""

    old_external_ticket_id: str | None
    external_ticket_id: str | None
    external_ticket_url: str | None = None


class SummaryUpdated(_Event, tag="summary_updated", frozen=True):
    summary: str | None


class ConclusionUpdated(_Event, tag="conclusion_updated", frozen=True):
    conclusion: str | None


class TagsUpdated(_Event, tag="tags_updated", frozen=True):
    old_tags: tuple[str, ...]
    tags: tuple[str, ...]


class NoteAdded(_Event, tag="note_added", frozen=True):
    note_id: UUID
    content: str
    note_type: NoteType


class DetectionAdded(_Event, tag="detection_added", frozen=True):
    detection: Detection
    grouping: Grouping | None = None  # why it joined: the rule, its key values, the window


class RecurrenceLinked(_Event, tag="recurrence_linked", frozen=True):
    """A detection of this resolved ticket's group recurred and opened another ticket (`link`)."""

    ticket_id: UUID
    ticket_number: int
    detection_id: str


class SplitTo(_Event, tag="split_to", frozen=True):
    """These detections left for a new ticket (undoing a wrong grouping or merge)."""

    ticket_id: UUID
    ticket_number: int
    detection_ids: tuple[str, ...]


class SplitFrom(_Event, tag="split_from", frozen=True):
    """This ticket was split off another, taking these detections."""

    ticket_id: UUID
    ticket_number: int
    detections: tuple[Detection, ...]


class DetectionUpdated(_Event, tag="detection_updated", frozen=True):
    """A known detection sent again with other content (ExtraHop's trigger fires on every update
    made on the appliance): the detection as it now reads, and which of its fields changed."""

    detection: Detection
    changed: tuple[str, ...]
    old: dict[str, Any] = {}  # the changed fields' previous values, for the timeline


class DetectionRemoved(_Event, tag="detection_removed", frozen=True):
    detection_id: str


class SeverityUpgraded(_Event, tag="severity_upgraded", frozen=True):
    old_severity: Severity
    severity: Severity
    detection_id: str | None = None


class DuplicatesSeen(_Event, tag="duplicates_seen", frozen=True):
    """One batch's re-sends of detections this ticket holds, counted together."""

    count: int
    last_seen_at: datetime


class SlaBreached(_Event, tag="sla_breached", frozen=True):
    kind: SlaKind
    deadline: datetime
    target_minutes: int
    severity: Severity


class SlaAtRisk(_Event, tag="sla_at_risk", frozen=True):
    """A running clock has used `percent` of its budget (`at_risk_at`): its deadline is near."""

    kind: SlaKind
    at_risk_at: datetime
    deadline: datetime
    target_minutes: int
    severity: Severity
    percent: int


class EscalationStepTaken(_Event, tag="escalation_step", frozen=True):
    """Step `step` (from 1) of the ticket's escalation policy, due `after_minutes` after it opened,
    found it still unacknowledged: these channels are told, and it goes to `escalate_to` if set
    (an `escalated` event follows)."""

    step: int
    after_minutes: int
    severity: Severity
    notify: tuple[str, ...] = ()
    escalate_to: str | None = None


class MergedInto(_Event, tag="merged_into", frozen=True):
    target_ticket_id: UUID
    target_ticket_number: int
    from_status: Status


class MergedFrom(_Event, tag="merged_from", frozen=True):
    source_ticket_id: UUID
    source_ticket_number: int
    detections: tuple[Detection, ...]


class EntityAdded(_Event, tag="entity_added", frozen=True):
    entity: Entity


class EntityUpdated(_Event, tag="entity_updated", frozen=True):
    entity: Entity
    changed: tuple[str, ...]


class EntityRemoved(_Event, tag="entity_removed", frozen=True):
    entity_id: UUID


class TelemetryAdded(_Event, tag="telemetry_added", frozen=True):
    telemetry: Telemetry


class TelemetryUpdated(_Event, tag="telemetry_updated", frozen=True):
    telemetry: Telemetry
    changed: tuple[str, ...]


class TelemetryRemoved(_Event, tag="telemetry_removed", frozen=True):
    telemetry_id: UUID


class ArtifactAdded(_Event, tag="artifact_added", frozen=True):
    artifact: Artifact


class ArtifactRemoved(_Event, tag="artifact_removed", frozen=True):
    artifact_id: UUID


class TaskAdded(_Event, tag="task_added", frozen=True):
    task: Task


class TaskCompleted(_Event, tag="task_completed", frozen=True):
    task_id: UUID


class TaskReopened(_Event, tag="task_reopened", frozen=True):
    task_id: UUID


class TaskAssigned(_Event, tag="task_assigned", frozen=True):
    task_id: UUID
    assignee: str | None


TicketEvent = (
    TicketCreated
    | StatusChanged
    | Acknowledged
    | Resolved
    | Closed
    | Reopened
    | Assigned
    | Escalated
    | Classified
    | InvestigationLinked
    | ExternalTicketLinked
    | SummaryUpdated
    | ConclusionUpdated
    | TagsUpdated
    | NoteAdded
    | DetectionAdded
    | DetectionUpdated
    | DetectionRemoved
    | RecurrenceLinked
    | SplitTo
    | SplitFrom
    | SeverityUpgraded
    | SlaBreached
    | SlaAtRisk
    | EscalationStepTaken
    | DuplicatesSeen
    | MergedInto
    | MergedFrom
    | EntityAdded
    | EntityUpdated
    | EntityRemoved
    | TelemetryAdded
    | TelemetryUpdated
    | TelemetryRemoved
    | ArtifactAdded
    | ArtifactRemoved
    | TaskAdded
    | TaskCompleted
    | TaskReopened
    | TaskAssigned
)


class OrgPurged(msgspec.Struct, frozen=True, tag="org_purged", tag_field="type"):
    """An org was unsubscribed and all its ticket data deleted (on its tombstone's own stream):
    subscribers of ticket-events drop their copies."""

    ts: datetime
    oid: str
    counts: dict[str, int]


class OrgResubscribed(msgspec.Struct, frozen=True, tag="org_resubscribed", tag_field="type"):
    """An operator took a purged org in again: only data detected after `purged_at` flows."""

    ts: datetime
    oid: str
    purged_at: datetime


OrgEvent = (
    ConfigUpdated | OrgPurged | OrgResubscribed | SuppressionCreated | SuppressionEnded | DetectionsSuppressed
)
AnyEvent = TicketEvent | OrgEvent

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[AnyEvent] = msgspec.json.Decoder(AnyEvent)
_plain = msgspec.json.Decoder(dict[str, Any])


def event_type(event: AnyEvent) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def encode_event(event: AnyEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes | str, kind: str | None = None, schema: int = 1) -> AnyEvent:
    """A stored document as this code's event: one of an older schema version (the `schema` of its
    metadata; `kind` is its type) is upcast first (domain.schema); a current one is decoded straight."""
    if kind is None or schema == schema_version(kind):
        return _decoder.decode(data)
    return _decoder.decode(_encoder.encode(upcast(kind, schema, _plain.decode(data))))


def decode_ticket_event(data: bytes | str, kind: str | None = None, schema: int = 1) -> TicketEvent:
    event = decode_event(data, kind, schema)
    if isinstance(event, OrgEvent):
        raise TypeError(f"a {event_type(event)} event where a ticket event was expected")
    return event


def event_details(event: AnyEvent) -> dict[str, object]:
    """The event-specific fields, as the webhook/timeline `metadata` shows them."""
    details: dict[str, object] = msgspec.to_builtins(event)
    details.pop("type", None)
    details.pop("ts", None)
    return details
