"""Suppressions: a SOC lead's decision that detections of a kind open no ticket for a while.

A suppressed detection is kept (recorded on the suppression's own stream, in the event store) and
counted, but opens no ticket and joins none. A suppression ends at its expiry or when ended early,
and holds no critical detection unless it says so.
"""

from datetime import datetime, timedelta
from typing import Annotated, Final
from uuid import UUID

import msgspec

from domain.detections import Detection
from domain.errors import InvalidValue
from domain.rules import KeyField, Matcher, RuleMatch, key_value
from domain.severity import Severity

MAX_DAYS: Final = 30
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
KeyValue = Annotated[str, msgspec.Meta(max_length=1024)]


class SuppressionRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of POST /api/v1/suppressions."""

    match: RuleMatch
    reason: Reason
    expires_at: datetime
    key_values: dict[KeyField, KeyValue] = {}
    include_critical: bool = False  # critical detections are held only when this says so


class Suppression(msgspec.Struct, frozen=True):
    suppression_id: UUID
    oid: str
    match: RuleMatch
    reason: str
    expires_at: datetime
    key_values: dict[str, str] = {}
    include_critical: bool = False
    created_at: datetime | None = None
    created_by: str | None = None
    ended_at: datetime | None = None


class SuppressionCreated(msgspec.Struct, frozen=True, tag="suppression_created", tag_field="type"):
    ts: datetime
    suppression: Suppression


class SuppressionEnded(msgspec.Struct, frozen=True, tag="suppression_ended", tag_field="type"):
    ts: datetime
    suppression_id: UUID
    oid: str


class DetectionsSuppressed(msgspec.Struct, frozen=True, tag="detections_suppressed", tag_field="type"):
    """One batch's detections held by a suppression, kept in full: nothing held is lost."""

    ts: datetime
    suppression_id: UUID
    oid: str
    detections: tuple[Detection, ...]


def create(
    request: SuppressionRequest, suppression_id: UUID, oid: str, by: str, now: datetime
) -> SuppressionCreated:
    if request.expires_at.tzinfo is None:
        raise InvalidValue("expires_at", "expires_at needs a time zone (e.g. 2026-12-31T00:00:00Z)")
    if request.expires_at <= now:
        raise InvalidValue("expires_at", "expires_at is in the past")
    if request.expires_at > now + timedelta(days=MAX_DAYS):
        raise InvalidValue("expires_at", f"a suppression lasts at most {MAX_DAYS} days")
    m = request.match
    if m.priority_min > m.priority_max:
        raise InvalidValue("match.priority_min", "priority_min is above priority_max")
    s = Suppression(
        suppression_id,
        oid,
        m,
        request.reason,
        request.expires_at,
        {str(k): v for k, v in request.key_values.items()},
        request.include_critical,
        now,
        by,
    )
    return SuppressionCreated(ts=now, suppression=s)


def end(s: Suppression, now: datetime) -> list[SuppressionEnded]:
    """Ended early; one already over (ended, or past its expiry) records nothing again."""
    if s.ended_at is not None or s.expires_at <= now:
        return []
    return [SuppressionEnded(ts=now, suppression_id=s.suppression_id, oid=s.oid)]


class Holding:
    """An org's active suppressions, compiled for a batch."""

    def __init__(self, suppressions: list[Suppression]) -> None:
        self._held = [(s, Matcher(s.match)) for s in suppressions]

    def holder(self, d: Detection, severity: Severity, now: datetime) -> Suppression | None:
        """The suppression that holds this detection (the first created), or None."""
        for s, matches in self._held:
            if s.ended_at is not None or s.expires_at <= now:
                continue
            if severity == "critical" and not s.include_critical:
                continue
            if matches(d) and all(key_value(d, f) == v for f, v in s.key_values.items()):
                return s
        return None
