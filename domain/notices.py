"""Notices: which ticket events tell whom, and what the message says per channel type (Slack's and
Teams' incoming-webhook formats, e-mail), with roll-ups of bursts.

Not wired to delivery yet (issue 32): this module decides and renders; nothing sends.
"""

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from domain import events as ev
from domain.notifications import NotificationChannel, Notifications, Trigger
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


def channels_for(n: Notifications, trigger: Trigger, severity: Severity) -> list[NotificationChannel]:
    """Every channel a rule for this trigger names, once, where the ticket's severity reaches the
    rule's minimum."""
    by_name = {c.name: c for c in n.channels}
    out: dict[str, NotificationChannel] = {}
    for rule in n.rules:
        if rule.on != trigger:
            continue
        if rule.min_severity is not None and SEVERITY_RANK[severity] < SEVERITY_RANK[rule.min_severity]:
            continue
        for name in rule.channels:
            out.setdefault(name, by_name[name])
    return list(out.values())


class Notice(msgspec.Struct, frozen=True):
    """One message to render: what happened to which ticket, and where it is."""

    trigger: Trigger
    oid: str
    ticket_number: int
    severity: Severity
    title: str
    ticket_url: str | None
    detail: str = ""
    count: int = 1  # > 1: a roll-up of that many


def headline(n: Notice) -> str:
    what = {
        "ticket_opened": "New ticket",
        "assigned": "Assigned",
        "escalated": "Escalated",
        "sla_at_risk": "SLA at risk",
        "sla_breached": "SLA breached",
        "mentioned": "Mentioned",
    }[n.trigger]
    if n.count > 1:
        return f"{n.count} notifications ({what}) in a minute, the last on ticket #{n.ticket_number}"
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
        "themeColor": {"critical": "C50F1F", "high": "F7630C", "medium": "FFB900", "low": "0078D4"}[
            n.severity
        ],
    }
    if n.ticket_url:
        card["potentialAction"] = [
            {"@type": "OpenUri", "name": "Open ticket", "targets": [{"os": "default", "uri": n.ticket_url}]}
        ]
    return card


def email_message(n: Notice) -> tuple[str, str]:
    """(subject, plain-text body)."""
    body = "\n\n".join(x for x in (headline(n), n.detail, n.ticket_url or "") if x)
    return f"[{n.severity}] {headline(n)}", body + "\n"


def rolled_up(times: Sequence[datetime], limit: int) -> tuple[list[int], list[tuple[datetime, int]]]:
    """Of the times one rule fired at (in order), those sent each on its own (their indexes) and,
    per minute in which it fired more than `limit` times, one roll-up: (the minute, how many)."""
    per_minute: dict[datetime, list[int]] = {}
    for i, at in enumerate(times):
        per_minute.setdefault(at.replace(second=0, microsecond=0), []).append(i)
    alone: list[int] = []
    rolls: list[tuple[datetime, int]] = []
    for minute, indexes in per_minute.items():
        if len(indexes) > limit:
            rolls.append((minute, len(indexes)))
        else:
            alone.extend(indexes)
    return sorted(alone), rolls
