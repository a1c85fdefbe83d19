"""Auto-grouping: which open ticket, if any, a new detection joins.

A detection joins the open ticket of its org with the same grouping key (default: category and
sensor) whose first detection is at most the window older than it (measured on detection time,
so a replay groups like live traffic), as long as that ticket holds fewer than the cap. Among
several, the most recently started wins. Otherwise the detection opens a new ticket.
"""

from datetime import datetime, timedelta
from uuid import UUID

import msgspec

from domain.config import OrgConfig
from domain.detections import Detection

_FIELD = {
    "category": "detection_cat",
    "sensor": "sensor_id",
    "hostname": "hostname",
    "source": "detection_source",
}


def group_key(detection: Detection, config: OrgConfig) -> str:
    return "\x1f".join(f"{f}={getattr(detection, _FIELD[f])}" for f in config.grouping_key_fields)


class GroupCandidate(msgspec.Struct):
    ticket_id: UUID
    first_detected_at: datetime
    detection_count: int


def _latest(
    candidates: list[GroupCandidate], detection: Detection, config: OrgConfig, *, full: bool
) -> GroupCandidate | None:
    window = timedelta(minutes=config.grouping_window_minutes)
    cap = config.grouping_max_detections
    matching = [
        c
        for c in candidates
        if c.first_detected_at <= detection.detected_at < c.first_detected_at + window
        and (c.detection_count >= cap) == full
    ]
    return max(matching, key=lambda c: (c.first_detected_at, c.ticket_id), default=None)


Candidates = list[GroupCandidate]


def choose(candidates: Candidates, detection: Detection, config: OrgConfig) -> GroupCandidate | None:
    """The open ticket the detection joins, or None for a new ticket."""
    return _latest(candidates, detection, config, full=False)


def full(candidates: Candidates, detection: Detection, config: OrgConfig) -> GroupCandidate | None:
    """The ticket that would have taken this detection but for the cap (the new ticket links to it)."""
    return _latest(candidates, detection, config, full=True)
