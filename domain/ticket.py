"""The ticket aggregate: decide(command, state, now) -> events and evolve(state, event) -> state."""

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from msgspec import UNSET
from msgspec.structs import replace

from domain import events as ev
from domain import sla
from domain.commands import (
    AbsorbMerge,
    AddArtifact,
    AddEntity,
    AddNote,
    AddTask,
    AddTelemetry,
    AutoClose,
    CheckEscalation,
    CheckSla,
    CountDuplicates,
    LinkDetection,
    MergeInto,
    NoteRecurrence,
    OpenTicket,
    RecurOn,
    RefreshDetection,
    RemoveArtifact,
    RemoveEntity,
    RemoveTelemetry,
    SplitOff,
    TakeSplit,
    TicketChanges,
    TicketCommand,
    UnlinkDetection,
    UpdateEntity,
    UpdateTask,
    UpdateTelemetry,
    UpdateTicket,
)
from domain.config import SlaTarget, check_http_url
from domain.detections import CONTENT_FIELDS, Detection
from domain.errors import (
    ConcurrencyError,
    DuplicateItem,
    InvalidTransition,
    InvalidValue,
    ItemNotFound,
    LimitReached,
    MergeRefused,
    StaleTicket,
    TaskOpen,
    TicketAlreadyExists,
    TicketClosed,
    TicketNotFound,
)
from domain.escalation import due_steps, unacknowledged
from domain.events import TicketEvent
from domain.evidence import Artifact, Entity, Telemetry, normalize_entity_value
from domain.lifecycle import TERMINAL, Status, allowed_next
from domain.limits import TAGS_MAX, TEXT_MAX, check_time
from domain.linked_detections import LinkedDetections
from domain.severity import SEVERITY_RANK, Severity
from domain.tags import normalize_tags
from domain.tasks import Task


class TicketState(msgspec.Struct, frozen=True):
    ticket_id: UUID
    oid: str
    ticket_number: int
    severity: Severity
    created_at: datetime
    updated_at: datetime
    status: Status = "new"
    classification: str = "pending"
    assignee: str | None = None
    escalation_group: str | None = None
    investigation_id: str | None = None
    external_ticket_id: str | None = None
    external_ticket_url: str | None = None
    summary: str | None = None
    conclusion: str | None = None
    tags: tuple[str, ...] = ()
    first_detection: Detection | None = None
    detections: LinkedDetections = msgspec.field(default_factory=LinkedDetections)  # in link order
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    merged_into_ticket_id: UUID | None = None
    status_changed_at: datetime | None = None
    mtta_breached_at: datetime | None = None  # when the MTTA clock was found past its deadline
    mttr_breached_at: datetime | None = None
    mtta_at_risk_at: datetime | None = None  # when the clock was found at risk (sla_at_risk)
    mttr_at_risk_at: datetime | None = None
    escalated: bool = False  # ever escalated (status or group): the reports' escalation rate
    escalation_steps: int = 0  # steps of its escalation policy taken (domain.escalation)
    entities: dict[UUID, Entity] = msgspec.field(default_factory=dict)
    telemetry: dict[UUID, Telemetry] = msgspec.field(default_factory=dict)
    artifacts: dict[UUID, Artifact] = msgspec.field(default_factory=dict)
    tasks: dict[UUID, Task] = msgspec.field(default_factory=dict)  # in the order they were added
    notes: int = 0  # how many were added
    duplicate_count: int = 0  # its detection ids sent again (re-sends, not redeliveries)
    last_seen_at: datetime | None = None  # the last time one of them was sent again
    # Tickets a recurrence linked this one to (either way), and those split from or off it.
    related_ticket_numbers: tuple[int, ...] = ()
    version: int = 0

    @property
    def detection_count(self) -> int:
        return len(self.detections)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def _within(state: TicketState, what: str, held: int, limit: int | None) -> None:
    """An org bounds what one ticket may hold, so that one ticket cannot grow without end."""
    if limit is not None and held >= limit:
        raise LimitReached(
            f"ticket {state.ticket_number} holds {held} {what}, its org's limit (max_{what}_per_ticket)"
        )


def _require(state: TicketState | None, command: TicketCommand) -> TicketState:
    if state is None:
        raise TicketNotFound(f"ticket {command.ticket_id} does not exist")
    return state


def _transition(state: TicketState, target: Status, now: datetime) -> list[TicketEvent]:
    if target == state.status:
        return []
    if target == "merged":
        raise InvalidValue("status", "tickets become merged only through POST tickets/merge")
    if target not in allowed_next(state.status):
        raise InvalidTransition(state.status, target, allowed_next(state.status))
    if target in ("resolved", "closed") and (task := open_mandatory_task(state)) is not None:
        raise TaskOpen(state.ticket_number, target, task.title)
    out: list[TicketEvent] = [ev.StatusChanged(ts=now, from_status=state.status, to_status=target)]
    if target == "acknowledged":
        out.append(ev.Acknowledged(ts=now))
    elif target == "resolved":
        out.append(ev.Resolved(ts=now))
    elif target == "closed":
        out.append(ev.Closed(ts=now))
    elif state.status == "resolved" and target == "in_progress":
        out.append(ev.Reopened(ts=now))
    return out


def open_mandatory_task(state: TicketState) -> Task | None:
    return next((t for t in state.tasks.values() if t.mandatory and not t.done), None)


def _update(state: TicketState, c: TicketChanges, now: datetime) -> list[TicketEvent]:
    """All fields of one PATCH, validated together: any error and no event at all."""
    out: list[TicketEvent] = []
    if c.status is not UNSET:
        out += _transition(state, c.status, now)
    if c.assignee is not UNSET and c.assignee != state.assignee:
        out.append(ev.Assigned(ts=now, old_assignee=state.assignee, assignee=c.assignee))
    if c.classification is not UNSET and c.classification != state.classification:
        out.append(
            ev.Classified(ts=now, old_classification=state.classification, classification=c.classification)
        )
    if c.escalation_group is not UNSET and c.escalation_group != state.escalation_group:
        out.append(
            ev.Escalated(
                ts=now, old_escalation_group=state.escalation_group, escalation_group=c.escalation_group
            )
        )
    if c.investigation_id is not UNSET and c.investigation_id != state.investigation_id:
        out.append(
            ev.InvestigationLinked(
                ts=now, old_investigation_id=state.investigation_id, investigation_id=c.investigation_id
            )
        )
    if c.external_ticket_url is not UNSET:
        check_http_url("external_ticket_url", c.external_ticket_url)
    link_changed = c.external_ticket_id is not UNSET and c.external_ticket_id != state.external_ticket_id
    url_changed = c.external_ticket_url is not UNSET and c.external_ticket_url != state.external_ticket_url
    if link_changed or url_changed:
        ticket = state.external_ticket_id if c.external_ticket_id is UNSET else c.external_ticket_id
        url = state.external_ticket_url if c.external_ticket_url is UNSET else c.external_ticket_url
        out.append(
            ev.ExternalTicketLinked(
                ts=now,
                old_external_ticket_id=state.external_ticket_id,
                external_ticket_id=ticket,
                external_ticket_url=url if ticket is not None else None,
            )
        )
    for field in ("summary", "conclusion"):
        value = getattr(c, field)
        if value is not UNSET and value is not None and len(value) > TEXT_MAX:
            raise InvalidValue(field, f"{field} has at most {TEXT_MAX} characters")
    if c.summary is not UNSET and c.summary != state.summary:
        out.append(ev.SummaryUpdated(ts=now, summary=c.summary))
    if c.conclusion is not UNSET and c.conclusion != state.conclusion:
        out.append(ev.ConclusionUpdated(ts=now, conclusion=c.conclusion))
    if c.tags is not UNSET:
        tags = normalize_tags(c.tags)
        if tags != state.tags:
            out.append(ev.TagsUpdated(ts=now, old_tags=state.tags, tags=tags))
    return out


def _changed(current: msgspec.Struct, changes: msgspec.Struct) -> dict[str, Any]:
    return {
        f: getattr(changes, f)
        for f in changes.__struct_fields__
        if getattr(changes, f) is not UNSET and getattr(changes, f) != getattr(current, f)
    }


def decide(command: TicketCommand, state: TicketState | None, now: datetime) -> list[TicketEvent]:
    if isinstance(command, OpenTicket):
        if state is not None:
            raise TicketAlreadyExists(command.ticket_id)
        tasks: list[TicketEvent] = [ev.TaskAdded(ts=now, task=t) for t in command.tasks]
        return [
            ev.TicketCreated(
                ts=now,
                ticket_id=command.ticket_id,
                oid=command.oid,
                ticket_number=command.ticket_number,
                severity=command.severity,
                detection=command.detection,
                group_key=command.group_key,
                continues_ticket_id=command.continues_ticket_id,
                grouping=command.grouping,
                related_ticket_id=command.related_ticket_id,
                related_ticket_number=command.related_ticket_number,
            ),
            *tasks,
        ]
    if isinstance(command, CountDuplicates):
        # None: the ticket was archived or purged meanwhile, nothing left to count on
        return [] if state is None else decide_unread(command, now)
    state = _require(state, command)
    match command:
        case UpdateTicket():
            if command.expected_version is not None and command.expected_version != state.version:
                raise StaleTicket(state.ticket_number, command.expected_version, state.version)
            return _update(state, command.changes, now)
        case LinkDetection():
            if command.detection.detection_id in state.detections:
                return []  # already linked here: linking is idempotent
            if state.terminal:
                raise TicketClosed(f"ticket {state.ticket_number} is {state.status}")
            return _added(state, command.detection, command.severity, command.grouping, now)
        case RecurOn():
            if command.detection.detection_id in state.detections:
                return []
            if state.terminal:  # closed or merged since the intake read its group: it reads again
                raise ConcurrencyError(f"ticket {state.ticket_number} is {state.status}, no longer resolved")
            reopened: list[TicketEvent] = []
            if state.status == "resolved":
                reopened = [
                    ev.StatusChanged(ts=now, from_status="resolved", to_status="in_progress"),
                    ev.Reopened(ts=now, detection_id=command.detection.detection_id),
                ]
            return reopened + _added(state, command.detection, command.severity, command.grouping, now)
        case NoteRecurrence():
            return [
                ev.RecurrenceLinked(
                    ts=now,
                    ticket_id=command.new_ticket_id,
                    ticket_number=command.new_ticket_number,
                    detection_id=command.detection_id,
                )
            ]
        case SplitOff():
            return _split_off(state, command, now)
        case TakeSplit():
            return [
                ev.SplitFrom(
                    ts=now,
                    ticket_id=command.source_ticket_id,
                    ticket_number=command.source_ticket_number,
                    detections=command.detections,
                )
            ]
        case RefreshDetection():
            return _refresh(state, command, now)
        case UnlinkDetection():
            if command.detection_id not in state.detections:
                raise ItemNotFound(f"detection {command.detection_id!r} is not linked to this ticket")
            return [ev.DetectionRemoved(ts=now, detection_id=command.detection_id)]
        case AddNote():
            _within(state, "notes", state.notes, command.limit)
            if not 0 < len(command.content) <= TEXT_MAX:
                raise InvalidValue("content", f"a note has 1 to {TEXT_MAX} characters")
            return [
                ev.NoteAdded(
                    ts=now, note_id=command.note_id, content=command.content, note_type=command.note_type
                )
            ]
        case AddEntity():
            _within(state, "entities", len(state.entities), command.limit)
            e = command.entity
            check_time("first_seen", e.first_seen)
            check_time("last_seen", e.last_seen)
            value = normalize_entity_value(e.entity_type, e.entity_value)
            if any(
                (x.entity_type, x.entity_value) == (e.entity_type, value) for x in state.entities.values()
            ):
                raise DuplicateItem(f"the ticket already has the {e.entity_type} entity {value!r}")
            return [ev.EntityAdded(ts=now, entity=replace(e, entity_value=value))]
        case UpdateEntity():
            entity = state.entities.get(command.entity_id)
            if entity is None:
                raise ItemNotFound(f"entity {command.entity_id} is not on this ticket")
            changed = _changed(entity, command.changes)
            for field in ("first_seen", "last_seen"):
                check_time(field, changed.get(field))
            if not changed:
                return []
            return [ev.EntityUpdated(ts=now, entity=replace(entity, **changed), changed=tuple(changed))]
        case RemoveEntity():
            if command.entity_id not in state.entities:
                raise ItemNotFound(f"entity {command.entity_id} is not on this ticket")
            return [ev.EntityRemoved(ts=now, entity_id=command.entity_id)]
        case AddTelemetry():
            t = command.telemetry
            if any((x.atom, x.sid) == (t.atom, t.sid) for x in state.telemetry.values()):
                raise DuplicateItem(f"the ticket already references event {t.atom!r} of sensor {t.sid!r}")
            return [ev.TelemetryAdded(ts=now, telemetry=t)]
        case UpdateTelemetry():
            telemetry = state.telemetry.get(command.telemetry_id)
            if telemetry is None:
                raise ItemNotFound(f"telemetry {command.telemetry_id} is not on this ticket")
            changed = _changed(telemetry, command.changes)
            if not changed:
                return []
            return [
                ev.TelemetryUpdated(ts=now, telemetry=replace(telemetry, **changed), changed=tuple(changed))
            ]
        case RemoveTelemetry():
            if command.telemetry_id not in state.telemetry:
                raise ItemNotFound(f"telemetry {command.telemetry_id} is not on this ticket")
            return [ev.TelemetryRemoved(ts=now, telemetry_id=command.telemetry_id)]
        case AddArtifact():
            _within(state, "artifacts", len(state.artifacts), command.limit)
            sha = command.artifact.sha256
            if sha is not None and any(a.sha256 == sha for a in state.artifacts.values()):
                raise DuplicateItem(f"the ticket already has this file (sha256 {sha})")
            return [ev.ArtifactAdded(ts=now, artifact=command.artifact)]
        case RemoveArtifact():
            if command.artifact_id not in state.artifacts:
                raise ItemNotFound(f"artifact {command.artifact_id} is not on this ticket")
            return [ev.ArtifactRemoved(ts=now, artifact_id=command.artifact_id)]
        case MergeInto():
            if command.target_oid != state.oid:
                raise MergeRefused("tickets of different orgs cannot be merged")
            if command.target_ticket_id == state.ticket_id:
                raise MergeRefused("a ticket cannot be merged into itself")
            if "merged" not in allowed_next(state.status):
                raise InvalidTransition(state.status, "merged", allowed_next(state.status))
            return [
                ev.MergedInto(
                    ts=now,
                    target_ticket_id=command.target_ticket_id,
                    target_ticket_number=command.target_ticket_number,
                    from_status=state.status,
                )
            ]
        case AddTask():
            _within(state, "tasks", len(state.tasks), command.limit)
            if command.task.task_id in state.tasks:
                raise DuplicateItem(f"task {command.task.task_id} is already on this ticket")
            return [ev.TaskAdded(ts=now, task=command.task)]
        case UpdateTask():
            return _update_task(state, command, now)
        case CheckSla():
            return _breaches(state, command.sla[state.severity], command.at_risk_percent, now)
        case CheckEscalation():
            return _escalation(state, command, now)
        case AutoClose():
            since = state.status_changed_at or state.created_at
            if (
                command.after_days <= 0
                or state.status != "resolved"
                or now < since + timedelta(days=command.after_days)
                or open_mandatory_task(state) is not None  # added since it was resolved: left for a person
            ):
                return []
            return _transition(state, "closed", now)
        case AbsorbMerge():
            if command.source_oid != state.oid:
                raise MergeRefused("tickets of different orgs cannot be merged")
            if state.terminal:
                raise MergeRefused(f"cannot merge into ticket {state.ticket_number}: it is {state.status}")
            inherited = tuple(d for d in command.detections if d.detection_id not in state.detections)
            return [
                ev.MergedFrom(
                    ts=now,
                    source_ticket_id=command.source_ticket_id,
                    source_ticket_number=command.source_ticket_number,
                    detections=inherited,
                )
            ]
    raise TypeError(f"unknown command {command!r}")  # pragma: no cover


def _escalation(state: TicketState, command: CheckEscalation, now: datetime) -> list[TicketEvent]:
    if not unacknowledged(state.status, state.acknowledged_at):
        return []
    out: list[TicketEvent] = []
    group = state.escalation_group
    for number, step in due_steps(command.steps, state.escalation_steps, state.created_at, now):
        out.append(
            ev.EscalationStepTaken(
                ts=now,
                step=number,
                after_minutes=step.after_minutes,
                severity=state.severity,
                notify=step.notify,
                escalate_to=step.escalate_to,
            )
        )
        if step.escalate_to is not None and step.escalate_to != group:
            out.append(ev.Escalated(ts=now, old_escalation_group=group, escalation_group=step.escalate_to))
            group = step.escalate_to
    return out


def _refresh(state: TicketState, command: RefreshDetection, now: datetime) -> list[TicketEvent]:
    old = state.detections.get(command.detection.detection_id)
    if old is None:
        return []  # unlinked meanwhile: nothing of it left here to update
    new = replace(command.detection, detected_at=old.detected_at, oid=old.oid)
    changed = tuple(f for f in CONTENT_FIELDS if getattr(old, f) != getattr(new, f))
    if not changed:
        return []
    before = {f: msgspec.to_builtins(getattr(old, f)) for f in changed}
    out: list[TicketEvent] = [ev.DetectionUpdated(ts=now, detection=new, changed=changed, old=before)]
    if not state.terminal and SEVERITY_RANK[command.severity] > SEVERITY_RANK[state.severity]:
        out.append(
            ev.SeverityUpgraded(
                ts=now, old_severity=state.severity, severity=command.severity, detection_id=new.detection_id
            )
        )
    tags = _with_tags(state.tags, new.tags)
    if tags != state.tags:
        out.append(ev.TagsUpdated(ts=now, old_tags=state.tags, tags=tags))
    return out


def _added(
    state: TicketState, d: Detection, severity: Severity | None, grouping: Any, now: datetime
) -> list[TicketEvent]:
    added: list[TicketEvent] = [ev.DetectionAdded(ts=now, detection=d, grouping=grouping)]
    if severity and SEVERITY_RANK[severity] > SEVERITY_RANK[state.severity]:
        added.append(
            ev.SeverityUpgraded(
                ts=now, old_severity=state.severity, severity=severity, detection_id=d.detection_id
            )
        )
    return added


def _update_task(state: TicketState, command: UpdateTask, now: datetime) -> list[TicketEvent]:
    task = state.tasks.get(command.task_id)
    if task is None:
        raise ItemNotFound(f"task {command.task_id} is not on this ticket")
    c, out = command.changes, list[TicketEvent]()
    if c.assignee is not UNSET and c.assignee != task.assignee:
        out.append(ev.TaskAssigned(ts=now, task_id=task.task_id, assignee=c.assignee))
    if c.done is not UNSET and c.done != task.done:
        done = ev.TaskCompleted(ts=now, task_id=task.task_id)
        out.append(done if c.done else ev.TaskReopened(ts=now, task_id=task.task_id))
    return out


MAX_SPLIT = 200


def _split_off(state: TicketState, command: SplitOff, now: datetime) -> list[TicketEvent]:
    ids = command.detection_ids
    if state.status == "merged":  # stays terminal: its detections are on the ticket it was merged into
        raise TicketClosed(f"ticket {state.ticket_number} is merged: split its target instead")
    if not 1 <= len(ids) <= MAX_SPLIT:
        raise InvalidValue("detection_ids", f"name 1 to {MAX_SPLIT} of the ticket's detections")
    if len(set(ids)) != len(ids):
        raise InvalidValue("detection_ids", "a detection is named twice")
    missing = [i for i in ids if i not in state.detections]
    if missing:
        raise InvalidValue(
            "detection_ids", f"detection {missing[0]!r} is not on ticket {state.ticket_number}"
        )
    if len(ids) == len(state.detections):
        raise InvalidValue("detection_ids", "a split leaves at least one detection on the ticket")
    return [
        ev.SplitTo(
            ts=now,
            ticket_id=command.new_ticket_id,
            ticket_number=command.new_ticket_number,
            detection_ids=ids,
        )
    ]


def _with_tags(tags: tuple[str, ...], more: tuple[str, ...]) -> tuple[str, ...]:
    """The ticket's tags with a detection's added, case-insensitively, while there is room."""
    held = {t.casefold() for t in tags}
    added = [t for t in more if t.casefold() not in held]
    return (*tags, *added)[: max(TAGS_MAX, len(tags))]


UnreadCommand = CountDuplicates


def decide_unread(command: UnreadCommand, now: datetime) -> list[TicketEvent]:
    """The decision of a command that any existing ticket accepts whatever its state, so a writer
    may append it knowing only that the stream exists and its version: re-sends mostly name
    tickets long out of the handler's cache, whose whole history would otherwise be read and
    folded just to add a count. Such commands touch no write-side index."""
    if command.count < 1:
        return []
    return [ev.DuplicatesSeen(ts=now, count=command.count, last_seen_at=command.last_seen_at)]


def _breaches(state: TicketState, target: SlaTarget, percent: int, now: datetime) -> list[TicketEvent]:
    """A running clock past the share of its budget is at risk, once and only before it breached;
    past its deadline it is breached, once."""
    if state.terminal:
        return []
    out: list[TicketEvent] = []
    clocks: tuple[tuple[sla.SlaKind, datetime | None, datetime | None, datetime | None], ...] = (
        ("mtta", state.acknowledged_at, state.mtta_breached_at, state.mtta_at_risk_at),
        ("mttr", state.resolved_at, state.mttr_breached_at, state.mttr_at_risk_at),
    )
    for kind, stopped, breached, at_risk in clocks:
        if stopped is not None or breached is not None:
            continue
        due = sla.deadline(state.created_at, target, kind)
        minutes = sla.target_minutes(target, kind)
        risk = sla.at_risk_at(state.created_at, target, kind, percent)
        if at_risk is None and now >= risk:
            out.append(
                ev.SlaAtRisk(
                    ts=now,
                    kind=kind,
                    at_risk_at=risk,
                    deadline=due,
                    target_minutes=minutes,
                    severity=state.severity,
                    percent=percent,
                )
            )
        if now >= due:
            out.append(
                ev.SlaBreached(
                    ts=now, kind=kind, deadline=due, target_minutes=minutes, severity=state.severity
                )
            )
    return out


def evolve(state: TicketState | None, event: TicketEvent) -> TicketState:
    if isinstance(event, ev.TicketCreated):
        d = event.detection
        return TicketState(
            ticket_id=event.ticket_id,
            oid=event.oid,
            ticket_number=event.ticket_number,
            severity=event.severity,
            created_at=event.ts,
            updated_at=event.ts,
            status_changed_at=event.ts,
            first_detection=d,
            detections=LinkedDetections([d] if d else []),
            summary=d.title if d else None,
            tags=d.tags if d else (),
            related_ticket_numbers=(event.related_ticket_number,) if event.related_ticket_number else (),
            version=1,
        )
    if state is None:
        raise ValueError(f"{type(event).__name__} before created")
    s = replace(state, version=state.version + 1, updated_at=max(state.updated_at, event.ts))
    match event:
        case ev.StatusChanged():
            escalated = s.escalated or event.to_status == "escalated"
            return replace(s, status=event.to_status, status_changed_at=event.ts, escalated=escalated)
        case ev.DuplicatesSeen():
            last = max(s.last_seen_at or event.last_seen_at, event.last_seen_at)
            return replace(s, duplicate_count=s.duplicate_count + event.count, last_seen_at=last)
        case ev.SlaBreached():
            if event.kind == "mtta":
                return replace(s, mtta_breached_at=event.ts)
            return replace(s, mttr_breached_at=event.ts)
        case ev.SlaAtRisk():
            if event.kind == "mtta":
                return replace(s, mtta_at_risk_at=event.ts)
            return replace(s, mttr_at_risk_at=event.ts)
        case ev.EscalationStepTaken():
            return replace(s, escalation_steps=event.step)
        case ev.Acknowledged():
            return replace(s, acknowledged_at=s.acknowledged_at or event.ts)
        case ev.Resolved():
            return replace(s, resolved_at=s.resolved_at or event.ts)  # the first resolution counts
        case ev.Closed():
            return replace(s, closed_at=event.ts)
        case ev.NoteAdded():
            return replace(s, notes=s.notes + 1)
        case ev.Reopened():
            return s
        case ev.Assigned():
            return replace(s, assignee=event.assignee)
        case ev.Escalated():
            escalated = s.escalated or event.escalation_group is not None
            return replace(s, escalation_group=event.escalation_group, escalated=escalated)
        case ev.Classified():
            return replace(s, classification=event.classification)
        case ev.InvestigationLinked():
            return replace(s, investigation_id=event.investigation_id)
        case ev.ExternalTicketLinked():
            return replace(
                s, external_ticket_id=event.external_ticket_id, external_ticket_url=event.external_ticket_url
            )
        case ev.SummaryUpdated():
            return replace(s, summary=event.summary)
        case ev.ConclusionUpdated():
            return replace(s, conclusion=event.conclusion)
        case ev.TagsUpdated():
            return replace(s, tags=event.tags)
        case ev.DetectionAdded():
            d = event.detection
            return replace(s, detections=s.detections.linked(d), first_detection=s.first_detection or d)
        case ev.DetectionUpdated():
            d = event.detection
            first = s.first_detection
            if first is not None and first.detection_id == d.detection_id:
                first = d
            return replace(s, detections=s.detections.linked(d), first_detection=first)
        case ev.DetectionRemoved():
            return replace(s, detections=s.detections.unlinked(event.detection_id))
        case ev.RecurrenceLinked():
            return replace(s, related_ticket_numbers=(*s.related_ticket_numbers, event.ticket_number))
        case ev.SplitTo():
            return replace(
                s,
                detections=s.detections.unlinked(*event.detection_ids),
                related_ticket_numbers=(*s.related_ticket_numbers, event.ticket_number),
            )
        case ev.SplitFrom():
            return replace(
                s,
                detections=s.detections.linked(*event.detections),
                first_detection=s.first_detection or next(iter(event.detections), None),
                related_ticket_numbers=(*s.related_ticket_numbers, event.ticket_number),
            )
        case ev.SeverityUpgraded():
            return replace(s, severity=event.severity)
        case ev.MergedInto():
            return replace(
                s, status="merged", merged_into_ticket_id=event.target_ticket_id, status_changed_at=event.ts
            )
        case ev.MergedFrom():
            return replace(
                s,
                detections=s.detections.linked(*event.detections),
                first_detection=s.first_detection or next(iter(event.detections), None),
            )
        case ev.EntityAdded() | ev.EntityUpdated():
            return replace(s, entities={**s.entities, event.entity.entity_id: event.entity})
        case ev.EntityRemoved():
            return replace(s, entities={k: v for k, v in s.entities.items() if k != event.entity_id})
        case ev.TelemetryAdded() | ev.TelemetryUpdated():
            return replace(s, telemetry={**s.telemetry, event.telemetry.telemetry_id: event.telemetry})
        case ev.TelemetryRemoved():
            return replace(s, telemetry={k: v for k, v in s.telemetry.items() if k != event.telemetry_id})
        case ev.ArtifactAdded():
            return replace(s, artifacts={**s.artifacts, event.artifact.artifact_id: event.artifact})
        case ev.ArtifactRemoved():
            return replace(s, artifacts={k: v for k, v in s.artifacts.items() if k != event.artifact_id})
        case ev.TaskAdded():
            return replace(s, tasks={**s.tasks, event.task.task_id: event.task})
        case ev.TaskCompleted() | ev.TaskReopened() | ev.TaskAssigned():
            return replace(s, tasks={**s.tasks, event.task_id: _task(s.tasks[event.task_id], event)})
    raise TypeError(f"unknown event {event!r}")  # pragma: no cover


def _task(task: Task, event: ev.TaskCompleted | ev.TaskReopened | ev.TaskAssigned) -> Task:
    if isinstance(event, ev.TaskAssigned):
        return replace(task, assignee=event.assignee)
    if isinstance(event, ev.TaskCompleted):
        return replace(task, done=True, done_at=event.ts)
    return replace(task, done=False, done_at=None)


def fold(events: list[TicketEvent], state: TicketState | None = None) -> TicketState | None:
    for event in events:
        state = evolve(state, event)
    return state


def plan_merge(target: TicketState, sources: list[TicketState]) -> list[TicketCommand]:
    """The commands of one merge, executed in one transaction; refusals are raised before any."""
    ids = [s.ticket_id for s in sources]
    if not sources:
        raise InvalidValue("source_ticket_numbers", "name at least one ticket to merge")
    if len(set(ids)) != len(ids):
        raise InvalidValue("source_ticket_numbers", "a ticket is named twice")
    if target.ticket_id in ids:
        raise MergeRefused("a ticket cannot be merged into itself")
    if target.terminal:
        raise MergeRefused(f"cannot merge into ticket {target.ticket_number}: it is {target.status}")
    commands: list[TicketCommand] = []
    for source in sources:
        detections = tuple(source.detections.values())
        commands.append(MergeInto(source.ticket_id, target.ticket_id, target.ticket_number, target.oid))
        commands.append(
            AbsorbMerge(target.ticket_id, source.ticket_id, source.ticket_number, source.oid, detections)
        )
    return commands


def plan_split(
    source: TicketState, detection_ids: tuple[str, ...], new_ticket_id: UUID, number: int, severity: Severity
) -> list[TicketCommand]:
    """The commands of one split, executed in one transaction: the original gives the detections up
    (refusals are raised there, before anything is written), the new ticket opens and takes them."""
    held = [source.detections[i] for i in detection_ids if i in source.detections]
    return [
        SplitOff(source.ticket_id, new_ticket_id, number, detection_ids),
        OpenTicket(new_ticket_id, source.oid, number, severity),
        TakeSplit(new_ticket_id, source.ticket_id, source.ticket_number, tuple(held)),
    ]
