"""What a grouping rule or a suppression matches, and the key values it groups or holds on.

A rule matches a detection by category and source (globs, `*` and `?` and `[...]`, case-sensitive
as the engines name them) and a priority range. Its key names detection fields and entity values;
a detection that lacks an entity its key names is not matched by the rule (it would otherwise group
with every other detection lacking it), and the next rule is tried.
"""

import fnmatch
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Final, Literal

import msgspec

from domain.detections import ENTITY_KEYS, Detection
from domain.severity import Severity

KeyField = Literal[
    "category", "sensor", "hostname", "source", "user", "src_ip", "dst_ip", "ext_ip", "dst_host"
]
KEY_FIELDS: Final[tuple[str, ...]] = ("category", "sensor", "hostname", "source", *ENTITY_KEYS)
_DETECTION_FIELD: Final = {
    "category": "detection_cat",
    "sensor": "sensor_id",
    "hostname": "hostname",
    "source": "detection_source",
}
Glob = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
Priority = Annotated[int, msgspec.Meta(ge=0, le=10)]
RuleName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,63}$")]
WindowKind = Literal["fixed", "sliding"]
DEFAULT_RULE: Final = "default"  # the reason's rule name when the org's grouping_* keys grouped


class RuleMatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    category: Glob = "*"
    source: Glob = "*"
    priority_min: Priority = 0
    priority_max: Priority = 10


def key_value(detection: Detection, field: str) -> str | None:
    """A key field's value on a detection; None when it carries no such entity."""
    column = _DETECTION_FIELD.get(field)
    if column is not None:
        value: str | None = getattr(detection, column)
        return value
    return getattr(detection.entities, field) if detection.entities is not None else None


def key_values(detection: Detection, fields: tuple[str, ...]) -> dict[str, str] | None:
    """The values of a key, or None when the detection lacks one of its entities."""
    out: dict[str, str] = {}
    for f in fields:
        value = key_value(detection, f)
        if value is None:
            return None
        out[f] = value
    return out


def glob(pattern: str) -> Callable[[str], bool]:
    """A glob as a test of a value (`*` alone and a plain value without the regular expression)."""
    if pattern == "*":
        return lambda _: True
    if not any(c in pattern for c in "*?["):
        return pattern.__eq__
    return re.compile(fnmatch.translate(pattern)).fullmatch  # type: ignore[return-value]


def ticket_matches(
    category_glob: str, severities: tuple[Severity, ...], category: str | None, severity: Severity
) -> bool:
    """Whether a ticket (its detection's category, its severity) is one a task template or a
    routing rule names: any severity when none is named; a ticket without a category only `*`."""
    if severities and severity not in severities:
        return False
    return category_glob == "*" or (category is not None and glob(category_glob)(category))


class Matcher:
    """A match compiled once (its globs as regular expressions) for the detections of a batch."""

    __slots__ = ("_category", "_high", "_low", "_source")

    def __init__(self, match: RuleMatch) -> None:
        self._category, self._source = glob(match.category), glob(match.source)
        self._low, self._high = match.priority_min, match.priority_max

    def __call__(self, d: Detection) -> bool:
        return (
            self._low <= d.detection_priority <= self._high
            and bool(self._category(d.detection_cat))
            and bool(self._source(d.detection_source))
        )


class GroupingRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One of an org's `grouping_rules`: the first that matches a detection groups it."""

    name: RuleName
    key: Annotated[tuple[KeyField, ...], msgspec.Meta(min_length=1, max_length=len(KEY_FIELDS))]
    match: RuleMatch = RuleMatch()
    window_minutes: Annotated[int, msgspec.Meta(ge=1, le=10_080)] = 60
    window: WindowKind = "fixed"
    # sliding: no group spans more than this from its first detection (default: a day, or the window)
    max_span_minutes: Annotated[int, msgspec.Meta(ge=1, le=43_200)] | None = None
    max_detections: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000


class Window(msgspec.Struct, frozen=True):
    """How long a group collects detections, and how many."""

    minutes: int
    kind: WindowKind = "fixed"
    max_span_minutes: int | None = None
    cap: int = 1000

    def span(self) -> timedelta:
        """How far after its first detection a group may still take one."""
        if self.kind == "sliding":
            return timedelta(minutes=self.max_span_minutes or max(self.minutes, 1440))
        return timedelta(minutes=self.minutes)

    def takes(self, first: datetime, last: datetime, at: datetime) -> bool:
        """Whether a group started at `first`, last extended at `last`, takes a detection at `at`."""
        if not first <= at < first + self.span():
            return False
        return self.kind == "fixed" or at < max(first, last) + timedelta(minutes=self.minutes)


def rule_window(rule: GroupingRule) -> Window:
    return Window(rule.window_minutes, rule.window, rule.max_span_minutes, rule.max_detections)
