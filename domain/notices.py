"""Notices: which ticket events tell whom, and what the message says per channel type (Slack's and
Teams' incoming-webhook formats, e-mail), with roll-ups of bursts. Pure: the notifier
(services/outbound/notifications.py) reads the events and queues what this decides.
"""

import re
from datetime import datetime, timedelta
from typing import Any, Final, Literal

import msgspec

from domain import events as ev
from domain.notifications import NotificationChannel, NotificationRule, Notifications, Trigger
from domain.severity import SEVERITY_RANK, Severity

_MENTION = re.compile(r"(?<![\w.@])@([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")


def mentions(text: str) -> tuple[str, ...]:
    """The addresses a note mentions (`@ana@soc.example`), each once, in order."""
    return tuple(dict.fromkeys(m.group(1).lower() for m in _MENTION.finditer(text)))


def trigger_of(event: ev.TicketEvent) -> Trigger | None:
    """The kind of notification an event is, if any."""
    match event:
        case ev.TicketCreated():
            return "ticket_opened"
        case ev.Assigned() if event.assignee is not None:
            return "assigned"
        case ev.Escalated() if event.escalation_group is not None:
            return "escalated"
        case ev.StatusChanged() if event.to_status == "escalated":
            return "escalated"
        case ev.SlaAtRisk():
            return "sla_at_risk"
        case ev.SlaBreached():
            return "sla_breached"
        case ev.NoteAdded() if mentions(event.content):
            return "mentioned"
    return None


def rules_for(n: Notifications, trigger: Trigger, severity: Severity) -> list[NotificationRule]:
    """The org's rules for this trigger that a ticket of this severity reaches."""
    return [
        rule
        for rule in n.rules
        if rule.on == trigger
        and (rule.min_severity is None or SEVERITY_RANK[severity] >= SEVERITY_RANK[rule.min_severity])
    ]


def channels_for(n: Notifications, trigger: Trigger, severity: Severity) -> list[NotificationChannel]:
    """Every channel those rules name, once."""
    by_name = {c.name: c for c in n.channels}
    names = dict.fromkeys(name for rule in rules_for(n, trigger, severity) for name in rule.channels)
    return [by_name[name] for name in names]


Kind = Trigger | Literal["unacknowledged"]  # the last: a step of an escalation policy


class Notice(msgspec.Struct, frozen=True):
    """One message to render: what happened to which ticket, and where it is."""

    trigger: Kind
    oid: str
    ticket_number: int
    severity: Severity
    title: str
    ticket_url: str | None
    detail: str = ""
    rolled_up: int = 0  # > 0: a roll-up of that many messages, held in a burst


def headline(n: Notice) -> str:
    what = {
        "ticket_opened": "New ticket",
        "assigned": "Assigned",
        "escalated": "Escalated",
        "sla_at_risk": "SLA at risk",
        "sla_breached": "SLA breached",
        "mentioned": "Mentioned",
        "unacknowledged": "Not acknowledged",
    }[n.trigger]
    if n.rolled_up:
        last = f"the last on ticket #{n.ticket_number}"
        return f"{n.rolled_up} more notifications ({what}) within a minute, {last}"
    return f"{what}: #{n.ticket_number} [{n.severity}] {n.title}"


def slack_message(n: Notice) -> dict[str, Any]:
    """Slack's incoming-webhook format: `text`, and a section with the ticket's link."""
    link = (
        f"<{n.ticket_url}|Open ticket #{n.ticket_number}>" if n.ticket_url else f"ticket #{n.ticket_number}"
    )
    text = "\n".join(x for x in (headline(n), n.detail, link) if x)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}


_COLOURS = {"critical": "C50F1F", "high": "F7630C", "medium": "FFB900", "low": "0078D4"}


def teams_message(n: Notice) -> dict[str, Any]:
    """Teams' incoming-webhook format (a MessageCard), with the ticket's link as its action."""
    card: dict[str, Any] = {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": headline(n),
        "title": headline(n),
        "text": n.detail or n.title,
        "themeColor": _COLOURS[n.severity],
    }
    if n.ticket_url:
        card["potentialAction"] = [
            {"@type": "OpenUri", "name": "Open ticket", "targets": [{"os": "default", "uri": n.ticket_url}]}
        ]
    return card


def email_message(n: Notice) -> tuple[str, str]:
    """(subject, plain-text body)."""
    body = "\n\n".join(x for x in (headline(n), n.detail, n.ticket_url or "") if x)
    return (headline(n) if n.rolled_up else f"[{n.severity}] {headline(n)}"), body + "\n"


def detail_of(event: ev.TicketEvent, actor: str | None) -> str:
    """The line under the headline: what changed, and who did it."""
    by = f" by {actor}" if actor else ""
    match event:
        case ev.TicketCreated(detection=d) if d is not None:
            where = f" on {d.hostname}" if d.hostname else ""
            return f"{d.detection_cat}{where}"
        case ev.Assigned():
            return f"Assigned to {event.assignee}{by}"
        case ev.Escalated():
            return f"Escalated to {event.escalation_group}{by}"
        case ev.StatusChanged():
            return f"Status escalated{by}"
        case ev.SlaAtRisk():
            return (
                f"{event.kind.upper()} clock has used {event.percent}% of its {event.target_minutes} minutes;"
                f" deadline {event.deadline:%Y-%m-%d %H:%M} UTC"
            )
        case ev.SlaBreached():
            return f"{event.kind.upper()} deadline {event.deadline:%Y-%m-%d %H:%M} UTC passed"
        case ev.NoteAdded():
            text = event.content if len(event.content) <= 500 else event.content[:499] + "…"
            return f"{actor or 'Someone'} mentioned you in a note:\n{text}"
        case ev.EscalationStepTaken():
            also = f"; escalated to {event.escalate_to}" if event.escalate_to else ""
            return f"Nobody has acknowledged it in {event.after_minutes} minutes (step {event.step}){also}"
    return ""


def personal(trigger: Kind, event: ev.TicketEvent) -> tuple[str, ...]:
    """Whom this event is about, whom an e-mail channel writes to besides its own list: the
    assignee of an assignment, everyone a note mentions."""
    if trigger == "assigned" and isinstance(event, ev.Assigned) and event.assignee and "@" in event.assignee:
        return (event.assignee.lower(),)
    if trigger == "mentioned" and isinstance(event, ev.NoteAdded):
        return mentions(event.content)[:MAX_MENTIONS]
    return ()


def email_recipients(channel: NotificationChannel, people: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*(a.lower() for a in channel.to), *people)))


MAX_MENTIONS: Final = 20  # addresses one note mails at most
BURST_WINDOW: Final = timedelta(minutes=1)
MAX_PEOPLE: Final = 200  # whom one roll-up mails at most


class Burst(msgspec.Struct, frozen=True):
    """One rule's messages since `started_at`: `count` called for, `held` of them (beyond the
    org's limit) waiting to be told in one roll-up once the minute is over."""

    started_at: datetime
    count: int = 0
    held: int = 0
    last_ticket: int = 0  # the number of the last ticket held, which the roll-up names
    people: tuple[str, ...] = ()  # those held messages were about (personal): the roll-up mails them

    def over(self, now: datetime) -> bool:
        return now >= self.started_at + BURST_WINDOW


def count_in(
    burst: Burst | None, at: datetime, limit: int, ticket_number: int = 0, people: tuple[str, ...] = ()
) -> tuple[Burst, bool, Burst | None]:
    """A message a rule calls for at `at`: (the burst it counts in, whether it goes alone, and
    the previous burst if it ended with messages held, whose roll-up is now due)."""
    ended = None
    if burst is None or burst.over(at):
        ended = burst if burst is not None and burst.held else None
        burst = Burst(started_at=at)
    if burst.count < limit:
        return msgspec.structs.replace(burst, count=burst.count + 1), True, ended
    told = tuple(dict.fromkeys((*burst.people, *people)))[:MAX_PEOPLE]
    return Burst(burst.started_at, burst.count + 1, burst.held + 1, ticket_number, told), False, ended
