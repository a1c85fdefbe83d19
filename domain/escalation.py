"""Escalation policies: what happens, step by step, while nobody acknowledges a ticket.

Per severity, an ordered list of steps, each due `after_minutes` after the ticket opened: it tells
channels (`notify`), escalates the ticket to a group (`escalate_to`, which routing may hand to one
of its analysts), or both. The scheduler asks; `due_steps` decides, on the ticket's own state, so
a step fires once and an acknowledgement stops the rest.
"""

from datetime import datetime, timedelta
from typing import Annotated, Final

import msgspec

from domain.errors import InvalidValue
from domain.notifications import ChannelName, Notifications
from domain.severity import Severity

MAX_STEPS: Final = 10
# A step may be due up to 30 days after the ticket opened.
StepMinutes = Annotated[int, msgspec.Meta(ge=1, le=43_200)]


class EscalationStep(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    after_minutes: StepMinutes
    notify: Annotated[tuple[ChannelName, ...], msgspec.Meta(max_length=20)] = ()
    escalate_to: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None


Policy = Annotated[tuple[EscalationStep, ...], msgspec.Meta(max_length=MAX_STEPS)]
EscalationPolicies = dict[Severity, Policy]


def validate_policies(policies: EscalationPolicies, notifications: Notifications) -> None:
    names = {c.name for c in notifications.channels}
    for severity, steps in policies.items():
        last = 0
        for i, step in enumerate(steps):
            at = f"escalation_policies.{severity}[{i}]"
            if step.after_minutes <= last:
                raise InvalidValue(f"{at}.after_minutes", "each step comes after the one before it")
            last = step.after_minutes
            if not step.notify and step.escalate_to is None:
                raise InvalidValue(at, "a step notifies channels, escalates to a group, or both")
            for j, name in enumerate(step.notify):
                if name not in names:
                    raise InvalidValue(f"{at}.notify[{j}]", f"no notification channel is named {name!r}")


def unacknowledged(status: str, acknowledged_at: datetime | None) -> bool:
    """Whether a ticket's policy still runs: nobody has acknowledged it or taken it into work
    (a step that escalates it to a group leaves it unacknowledged: the group must answer)."""
    return acknowledged_at is None and status in ("new", "escalated")


def due_steps(
    steps: tuple[EscalationStep, ...], done: int, created_at: datetime, now: datetime
) -> list[tuple[int, EscalationStep]]:
    """The steps (numbered from 1) past their time and not yet taken; `done` were taken before."""
    return [
        (i + 1, step)
        for i, step in enumerate(steps)
        if i >= done and now >= created_at + timedelta(minutes=step.after_minutes)
    ]
