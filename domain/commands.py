"""Commands on the ticket aggregate. Identity and numbering are decided by the caller (they need I/O)."""

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec
from msgspec import UNSET, UnsetType

from domain.config import HttpUrl, SlaTarget
from domain.detections import Detection
from domain.escalation import EscalationStep
from domain.evidence import Artifact, Entity, Telemetry, Verdict
from domain.grouping import Grouping
from domain.lifecycle import Status
from domain.limits import TAG_MAX_LENGTH, TAGS_MAX, TEXT_MAX
from domain.notes import NoteType
from domain.severity import Severity
from domain.tasks import Task

Classification = Literal["pending", "true_positive", "false_positive"]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX)]
Tag = Annotated[str, msgspec.Meta(max_length=TAG_MAX_LENGTH)]


class TicketChanges(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The PATCH body: every field optional; null clears assignee, group, investigation, texts."""

    status: Status | UnsetType = UNSET
    assignee: Name | None | UnsetType = UNSET
    classification: Classification | UnsetType = UNSET
    escalation_group: Name | None | UnsetType = UNSET
    investigation_id: Name | None | UnsetType = UNSET
    # The ticket's issue in an external work-tracker (Jira, ServiceNow...) and its link.
    external_ticket_id: Name | None | UnsetType = UNSET
    external_ticket_url: HttpUrl | None | UnsetType = UNSET
    summary: Text | None | UnsetType = UNSET
    conclusion: Text | None | UnsetType = UNSET
    tags: Annotated[list[Tag], msgspec.Meta(max_length=TAGS_MAX * 4)] | UnsetType = UNSET


class _Command(msgspec.Struct, frozen=True, tag_field="command"):
    ticket_id: UUID


class OpenTicket(_Command, tag="open_ticket", frozen=True):
    oid: str
    ticket_number: int
    severity: Severity
    detection: Detection | None = None
    group_key: str | None = None
    continues_ticket_id: UUID | None = None
    grouping: Grouping | None = None
    related_ticket_id: UUID | None = None  # the resolved ticket its detection recurred on
    related_ticket_number: int | None = None
    tasks: tuple[Task, ...] = ()  # its org's task templates' tasks


class UpdateTicket(_Command, tag="update_ticket", frozen=True):
    changes: TicketChanges
    expected_version: int | None = None  # the version the change was decided on, if the client says


class LinkDetection(_Command, tag="link_detection", frozen=True):
    detection: Detection
    severity: Severity | None = None  # the detection's own severity: raises the ticket's, never lowers it
    grouping: Grouping | None = None  # why it joins (auto-grouping); None: linked by hand


class RecurOn(_Command, tag="recur_on", frozen=True):
    """A detection recurring on a resolved ticket of its group (recurrence `reopen`): the ticket
    is reopened, naming it, and takes it."""

    detection: Detection
    severity: Severity
    grouping: Grouping | None = None


class NoteRecurrence(_Command, tag="note_recurrence", frozen=True):
    """The resolved ticket's side of a recurrence `link`: the new ticket its detection opened."""

    new_ticket_id: UUID
    new_ticket_number: int
    detection_id: str


class SplitOff(_Command, tag="split_off", frozen=True):
    """The original's side of a split: these detections move to the new ticket."""

    new_ticket_id: UUID
    new_ticket_number: int
    detection_ids: tuple[str, ...]


class TakeSplit(_Command, tag="take_split", frozen=True):
    """The new ticket's side of a split: the detections it takes from the original."""

    source_ticket_id: UUID
    source_ticket_number: int
    detections: tuple[Detection, ...]


class RefreshDetection(_Command, tag="refresh_detection", frozen=True):
    """A detection the ticket holds, sent again with its content as it now reads: what changed is
    recorded, a higher severity raises the ticket's, new tags are added; the same content, nothing."""

    detection: Detection
    severity: Severity


class UnlinkDetection(_Command, tag="unlink_detection", frozen=True):
    detection_id: str


class AddNote(_Command, tag="add_note", frozen=True):
    note_id: UUID
    content: str
    note_type: NoteType = "general"
    limit: int | None = None  # the org's max_notes_per_ticket


class AddEntity(_Command, tag="add_entity", frozen=True):
    entity: Entity
    limit: int | None = None  # the org's max_entities_per_ticket


class EntityChanges(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name | None | UnsetType = UNSET
    verdict: Verdict | UnsetType = UNSET
    context: Text | None | UnsetType = UNSET
    first_seen: datetime | None | UnsetType = UNSET
    last_seen: datetime | None | UnsetType = UNSET


class UpdateEntity(_Command, tag="update_entity", frozen=True):
    entity_id: UUID
    changes: EntityChanges


class RemoveEntity(_Command, tag="remove_entity", frozen=True):
    entity_id: UUID


class AddTelemetry(_Command, tag="add_telemetry", frozen=True):
    telemetry: Telemetry


class TelemetryChanges(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event_summary: Text | None | UnsetType = UNSET
    verdict: Verdict | None | UnsetType = UNSET
    relevance: Text | None | UnsetType = UNSET


class UpdateTelemetry(_Command, tag="update_telemetry", frozen=True):
    telemetry_id: UUID
    changes: TelemetryChanges


class RemoveTelemetry(_Command, tag="remove_telemetry", frozen=True):
    telemetry_id: UUID


class AddArtifact(_Command, tag="add_artifact", frozen=True):
    artifact: Artifact
    limit: int | None = None  # the org's max_artifacts_per_ticket


class RemoveArtifact(_Command, tag="remove_artifact", frozen=True):
    artifact_id: UUID


class MergeInto(_Command, tag="merge_into", frozen=True):
    """The source side of a merge (ticket_id is the source)."""

    target_ticket_id: UUID
    target_ticket_number: int
    target_oid: str


class AbsorbMerge(_Command, tag="absorb_merge", frozen=True):
    """The target side of a merge: inherits the source's detections."""

    source_ticket_id: UUID
    source_ticket_number: int
    source_oid: str
    detections: tuple[Detection, ...]


class AddTask(_Command, tag="add_task", frozen=True):
    task: Task
    limit: int | None = None  # the org's max_tasks_per_ticket


class TaskChanges(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The PATCH body of a task."""

    done: bool | UnsetType = UNSET
    assignee: Name | None | UnsetType = UNSET


class UpdateTask(_Command, tag="update_task", frozen=True):
    task_id: UUID
    changes: TaskChanges


class CheckSla(_Command, tag="check_sla", frozen=True):
    """The scheduler's question: has a clock of this ticket run past its deadline, or past the
    share of its budget that puts it at risk?"""

    sla: dict[Severity, SlaTarget]
    at_risk_percent: int = 75


class CheckEscalation(_Command, tag="check_escalation", frozen=True):
    """The scheduler's question: is a step of this ticket's escalation policy due?"""

    steps: tuple[EscalationStep, ...]


class AutoClose(_Command, tag="auto_close", frozen=True):
    """Close a ticket that has stayed resolved for the org's auto_close_resolved_after_days."""

    after_days: int


class CountDuplicates(_Command, tag="count_duplicates", frozen=True):
    """Detection ids the ticket holds, sent again (re-sends, not redeliveries of one message)."""

    count: int
    last_seen_at: datetime


TicketCommand = (
    OpenTicket
    | UpdateTicket
    | LinkDetection
    | RecurOn
    | NoteRecurrence
    | SplitOff
    | TakeSplit
    | RefreshDetection
    | UnlinkDetection
    | AddNote
    | AddEntity
    | UpdateEntity
    | RemoveEntity
    | AddTelemetry
    | UpdateTelemetry
    | RemoveTelemetry
    | AddArtifact
    | RemoveArtifact
    | AddTask
    | UpdateTask
    | MergeInto
    | AbsorbMerge
    | CheckSla
    | CheckEscalation
    | AutoClose
    | CountDuplicates
)
