"""The seed's ticket state machine, as a table."""

from typing import Final, Literal

Status = Literal["new", "acknowledged", "in_progress", "escalated", "resolved", "closed", "merged"]

STATUSES: Final[tuple[Status, ...]] = (
    "new",
    "acknowledged",
    "in_progress",
    "escalated",
    "resolved",
    "closed",
    "merged",
)

TRANSITIONS: Final[dict[Status, tuple[Status, ...]]] = {
    "new": ("acknowledged", "in_progress", "escalated", "closed", "merged"),
    "acknowledged": ("in_progress", "escalated", "closed", "merged"),
    "in_progress": ("escalated", "resolved", "closed", "merged"),
    "escalated": ("in_progress", "resolved", "closed", "merged"),
    "resolved": ("closed", "in_progress", "merged"),
    "closed": (),
    "merged": (),
}

TERMINAL: Final[frozenset[Status]] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
# Tickets in these states no longer collect detections automatically.
OPEN: Final[frozenset[Status]] = frozenset({"new", "acknowledged", "in_progress", "escalated"})


def allowed_next(status: Status) -> tuple[Status, ...]:
    return TRANSITIONS[status]


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]
