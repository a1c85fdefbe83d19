"""Response bodies of the API as msgspec types: the handlers return them, OpenAPI is built from them."""

from typing import Any
from uuid import UUID

import msgspec

from domain.detections import Detection
from domain.evidence import Artifact, Entity, Telemetry
from projections.ticket_queries import (
    ArtifactView,
    DetectionView,
    EntityMatch,
    EntityView,
    TelemetryView,
    TicketView,
    TimelineEvent,
)


class TicketList(msgspec.Struct):
    tickets: list[TicketView]
    next_page_token: str | None
    total_counts: dict[str, int]


class GroupedDetection(Detection, frozen=True):
    """A detection the ticket holds, with the reason it is there when grouping put it there."""

    grouping: dict[str, Any] | None = None


class TicketWithEvents(msgspec.Struct):
    ticket: TicketView
    events: list[TimelineEvent]
    # ?expand=evidence: what the ticket holds, from the same read of its events (one call for a page)
    detections: list[GroupedDetection] | msgspec.UnsetType = msgspec.UNSET
    entities: list[Entity] | msgspec.UnsetType = msgspec.UNSET
    telemetry: list[Telemetry] | msgspec.UnsetType = msgspec.UNSET
    artifacts: list[Artifact] | msgspec.UnsetType = msgspec.UNSET


class TicketOnly(msgspec.Struct):
    ticket: TicketView


class DetectionList(msgspec.Struct):
    detections: list[DetectionView]


class DetectionLinked(msgspec.Struct):
    detection: Detection
    detection_count: int
    linked: bool


class DetectionUnlinked(msgspec.Struct):
    detection_id: str
    deleted: bool
    detection_count: int


class EntityList(msgspec.Struct):
    entities: list[EntityView]


class EntitySearch(msgspec.Struct):
    tickets: list[EntityMatch]


class TelemetryList(msgspec.Struct):
    telemetry: list[TelemetryView]


class ArtifactList(msgspec.Struct):
    artifacts: list[ArtifactView]


class Deleted(msgspec.Struct):
    deleted: bool
    entity_id: UUID | None = None
    telemetry_id: UUID | None = None
    artifact_id: UUID | None = None


class Note(msgspec.Struct):
    note_id: UUID
    content: str
    note_type: str
    by: str
    ts: Any


class MergeResult(msgspec.Struct):
    ticket: TicketView
    merged: list[int]


class AssigneeList(msgspec.Struct):
    assignees: list[str]


class ExtensionReply(msgspec.Struct):
    data: dict[str, Any]


class WhoAmI(msgspec.Struct, frozen=True):
    """What a credential grants: who it is and, per org, its permissions (the console's sign-in)."""

    subject: str
    operator: bool
    api_key: bool
    orgs: dict[str, list[str]]
    org_names: dict[str, str] = {}  # the display names (`org_name`) of the orgs it sees that have one
    # where the identity came from: token (this service's), api_key, or session:<issuer> (single sign-on)
    source: str = "token"
    csrf_token: str | None = None  # a session's: what its writes send in X-CSRF-Token


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    # /readyz: events each reader of the log (projections, relay, webhooks) has still to handle
    behind: dict[str, int] | None = None


class Error(msgspec.Struct):
    error: str
    field: str | None = None
    allowed: list[str] | None = None


EntityResponse = Entity
TelemetryResponse = Telemetry
ArtifactResponse = Artifact
