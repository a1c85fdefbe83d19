"""Auto-grouping: which open ticket, if any, a new detection joins, and the reason it does.

A detection is keyed by the first of its org's `grouping_rules` that matches it, else (when the
org groups automatically) by the org's `grouping_key_fields`. It joins the open ticket with the
same key whose window takes it (measured on detection time, so a replay groups like live traffic:
a fixed window from the group's first detection, or a sliding one that each detection extends up
to a maximum span), as long as that ticket holds fewer than the cap. Among several, the most
recently started wins. Otherwise the detection opens a new ticket.
"""

from datetime import datetime, timedelta
from typing import NamedTuple
from uuid import UUID

import msgspec

from domain.config import OrgConfig
from domain.detections import Detection
from domain.rules import DEFAULT_RULE, GroupingRule, Matcher, Window, key_value, key_values, rule_window


class Grouping(msgspec.Struct, frozen=True, omit_defaults=True):
    """Why a detection is on its ticket: the rule that keyed it, its key's values and the window.
    Carried by the `created` and `detection_added` events of grouped detections."""

    rule: str
    key: dict[str, str]
    window_minutes: int
    window: str = "fixed"
    max_span_minutes: int | None = None
    max_detections: int | None = None


def group_key(detection: Detection, config: OrgConfig) -> str:
    """The key of the org's own grouping (no rule matched), as it always was."""
    return "\x1f".join(f"{f}={key_value(detection, f)}" for f in config.grouping_key_fields)


def default_window(config: OrgConfig) -> Window:
    return Window(config.grouping_window_minutes, cap=config.grouping_max_detections)


class Keying(NamedTuple):
    """A new detection's group: its key, the window its group collects in, and the reason. `joins`
    is False where only the recurrence policy reads the key (the org does not group it)."""

    key: str
    window: Window
    grouping: Grouping
    joins: bool


class Rules:
    """An org's grouping rules, compiled once for a batch, with a detection's keying decided once
    per (category, source, priority): a batch's detections share a handful of those."""

    def __init__(self, config: OrgConfig) -> None:
        self.config = config
        self._rules: list[tuple[GroupingRule, Matcher, Window]] = [
            (r, Matcher(r.match), rule_window(r)) for r in config.grouping_rules
        ]
        self._default = default_window(config)
        self._memo: dict[tuple[str, str, int], list[tuple[GroupingRule, Window]]] = {}

    def keying(self, d: Detection, *, recurrence: bool) -> Keying | None:
        shape = (d.detection_cat, d.detection_source, d.detection_priority)
        candidates = self._memo.get(shape)
        if candidates is None:
            candidates = self._memo[shape] = [(r, w) for r, m, w in self._rules if m(d)]
        for rule, window in candidates:
            values = key_values(d, rule.key)
            if values is not None:
                key = "\x1f".join([f"rule={rule.name}", *(f"{f}={v}" for f, v in values.items())])
                return Keying(key, window, _reason(rule.name, values, window), True)
        c = self.config
        if not (c.auto_grouping_enabled or recurrence):
            return None
        values = {f: str(key_value(d, f)) for f in c.grouping_key_fields}
        grouping = _reason(DEFAULT_RULE, values, self._default)
        return Keying(group_key(d, c), self._default, grouping, c.auto_grouping_enabled)


def _reason(rule: str, values: dict[str, str], w: Window) -> Grouping:
    span = w.max_span_minutes if w.kind == "sliding" else None
    return Grouping(rule, values, w.minutes, w.kind, span, w.cap)


class GroupCandidate(msgspec.Struct):
    ticket_id: UUID
    first_detected_at: datetime
    detection_count: int
    last_detected_at: datetime | None = None
    resolved_at: datetime | None = None  # set: the ticket is resolved (a recurrence may reopen it)
    ticket_number: int | None = None  # read for resolved ones: a recurrence's new ticket names it


def _latest(
    candidates: list[GroupCandidate], at: datetime, w: Window, *, full: bool
) -> GroupCandidate | None:
    matching = [
        c
        for c in candidates
        if c.resolved_at is None
        and w.takes(c.first_detected_at, c.last_detected_at or c.first_detected_at, at)
        and (c.detection_count >= w.cap) == full
    ]
    return max(matching, key=lambda c: (c.first_detected_at, c.ticket_id), default=None)


Candidates = list[GroupCandidate]


def choose(candidates: Candidates, detection: Detection, w: Window) -> GroupCandidate | None:
    """The open ticket the detection joins, or None for a new ticket."""
    return _latest(candidates, detection.detected_at, w, full=False)


def full(candidates: Candidates, detection: Detection, w: Window) -> GroupCandidate | None:
    """The ticket that would have taken this detection but for the cap (the new ticket links to it)."""
    return _latest(candidates, detection.detected_at, w, full=True)


def recurred(candidates: Candidates, detection: Detection, config: OrgConfig) -> GroupCandidate | None:
    """The resolved ticket of the key that this detection recurs on: resolved at most the org's
    recurrence window before the detection was detected (the latest resolved wins), or None. A
    detection from before the resolution (late news of the incident resolved) is no recurrence."""
    r = config.recurrence
    if r.policy == "off":
        return None
    at, window = detection.detected_at, timedelta(minutes=r.window_minutes)
    matching = [
        c for c in candidates if c.resolved_at is not None and c.resolved_at <= at < c.resolved_at + window
    ]
    return max(matching, key=lambda c: (c.resolved_at or at, c.ticket_id), default=None)
