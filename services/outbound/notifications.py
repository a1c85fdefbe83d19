"""Notifications: the events an org's rules name (and its escalation policies' steps), told to its
Slack and Teams channels and by e-mail, through the delivery queue like every outbound request.

What is told, to whom and in which words is domain.notices; this queues it. A queued row holds the
message and the channel's name, never its webhook URL: that is read from org_secrets when the row
is sent (so a rotated URL applies to what waits, and no URL lands in a table but org_secrets).
Bursts are counted per org and rule in `notification_bursts`, in the transaction that moves the
checkpoint: past the org's `rollup_per_minute` within a minute, messages are held and told in one
roll-up once the minute is over (flush, at the start of each delivery pass).
"""

import uuid
from collections.abc import Iterable
from typing import Any, Literal
from uuid import UUID

import msgspec

from domain import events as ev
from domain.config import OrgConfig
from domain.events import decode_ticket_event
from domain.notices import (
    Burst,
    Kind,
    Notice,
    count_in,
    detail_of,
    email_message,
    email_recipients,
    personal,
    rules_for,
    slack_message,
    teams_message,
    trigger_of,
)
from domain.notifications import NotificationChannel, NotificationRule
from domain.ticket import TicketState
from domain.ticket_links import render_ticket_url
from services import metrics
from services.commands.configs import load_configs
from services.commands.repository import load_states
from services.commands.state_cache import StateCache
from services.delivery.mail import Mailer
from services.delivery.queue import NOTIFY, Target, notify_targets
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.outbound.deliveries import Channel, Delivery, Outcome, Queued, Request, signed

NOTIFICATIONS_NAME = "notifications"  # its subscription's name
# The event types that may tell someone something (decoding every event would cost the log's CPU).
TOLD = frozenset(
    {"created", "assigned", "escalated", "status_changed", "sla_at_risk", "sla_breached", "note_added",
     "escalation_step"}
)  # fmt: skip
_ROLLUP_IDS = uuid.UUID("5b0c1f5e-6d7e-4a43-9a55-3c1e8f1d2a77")


class Message(msgspec.Struct, frozen=True, omit_defaults=True):
    """A queued row's body: one message to one channel (and, for e-mail, one recipient)."""

    type: Literal["slack", "teams", "email"]
    channel: str
    payload: dict[str, Any] | None = None  # Slack's or Teams' JSON
    to: str | None = None  # e-mail
    subject: str = ""
    text: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def messages(channel: NotificationChannel, notice: Notice, recipients: Iterable[str]) -> list[Message]:
    if channel.type == "slack":
        return [Message("slack", channel.name, payload=slack_message(notice))]
    if channel.type == "teams":
        return [Message("teams", channel.name, payload=teams_message(notice))]
    subject, text = email_message(notice)
    return [Message("email", channel.name, to=to, subject=subject, text=text) for to in recipients]


def rule_key(rule: NotificationRule) -> str:
    return f"{rule.on}:{rule.min_severity or ''}:{','.join(rule.channels)}"


class Notifications(Channel):
    name = NOTIFY
    checkpoint = NOTIFICATIONS_NAME

    def __init__(
        self,
        ticket_url_template: str | None = None,
        mailer: Mailer | None = None,
        cache: StateCache | None = None,
    ) -> None:
        self.ticket_url_template = ticket_url_template
        self.mailer = mailer
        self.cache = cache if cache is not None else StateCache(max_weight=20_000)

    def _url(self, oid: str, number: int) -> str | None:
        """The link the ticket-events messages and webhooks carry too."""
        if self.ticket_url_template is None:
            return None
        return render_ticket_url(self.ticket_url_template, str(number), oid)

    async def queue(self, conn: db.Connection, events: list[RecordedEvent]) -> list[Queued]:
        told = [e for e in events if e.type in TOLD and isinstance(e.metadata.get("oid"), str)]
        if not told:
            return []
        configs = await load_configs(conn, {e.metadata["oid"] for e in told})
        told = [e for e in told if configs[e.metadata["oid"]].notifications.channels]
        if not told:
            return []
        states = await load_states(conn, list({e.stream_id for e in told}), self.cache)
        oids = sorted({e.metadata["oid"] for e in told})
        bursts = {
            (r[0], r[1]): Burst(r[2], r[3], r[4], r[5], tuple(r[6]))
            for r in await conn.fetch(
                "SELECT oid, rule, started_at, count, held, last_ticket, people FROM notification_bursts"
                " WHERE oid = ANY($1::text[]) ORDER BY oid, rule FOR UPDATE",
                oids,
            )
        }
        changed: dict[tuple[str, str], tuple[NotificationRule, RecordedEvent]] = {}
        rows: list[Queued] = []
        seen: set[tuple[UUID, object, object]] = set()
        for e in told:
            oid, state = e.metadata["oid"], states.get(e.stream_id)
            if state is None:
                continue
            config = configs[oid]
            event = decode_ticket_event(e.data, e.type, e.schema)
            if isinstance(event, ev.EscalationStepTaken):
                notice = self._notice(e, event, "unacknowledged", state)
                rows += _queued(config, event.notify, notice, (), e.position, e.event_id)
                continue
            trigger = trigger_of(event)
            if trigger is None:
                continue
            if trigger == "escalated":  # a PATCH of both status and group: one message
                change = (e.stream_id, e.metadata.get("correlation_id") or e.event_id, event.ts)
                if change in seen:
                    continue
                seen.add(change)
            notice = self._notice(e, event, trigger, state)
            names: dict[str, None] = {}
            for rule in rules_for(config.notifications, trigger, notice.severity):
                key = (oid, rule_key(rule))
                burst, alone, ended = count_in(
                    bursts.get(key),
                    e.recorded_at,
                    config.notifications.rollup_per_minute,
                    state.ticket_number,
                    personal(trigger, event),
                )
                if ended is not None:
                    rows += _rollup(oid, config, rule, ended, trigger, e.position)
                bursts[key] = burst
                changed[key] = (rule, e)
                if alone:
                    names.update(dict.fromkeys(rule.channels))
                else:
                    for c in config.notifications.channels:
                        if c.name in rule.channels:
                            metrics.NOTIFICATIONS.labels(c.type, "held").inc()
            rows += _queued(config, names, notice, personal(trigger, event), e.position, e.event_id)
        if changed:
            await conn.executemany(
                "INSERT INTO notification_bursts (oid, rule, started_at, count, held, trigger, channels,"
                " last_position, last_ticket, people) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                " ON CONFLICT (oid, rule) DO UPDATE SET started_at = $3, count = $4, held = $5,"
                " channels = $7, last_position = $8, last_ticket = $9, people = $10",
                [
                    (o, k, b.started_at, b.count, b.held, r.on, list(r.channels), e.position, b.last_ticket,
                     list(b.people))
                    for (o, k), (r, e) in changed.items()
                    for b in [bursts[(o, k)]]
                ],
            )  # fmt: skip
        return rows

    def _notice(self, e: RecordedEvent, event: ev.TicketEvent, kind: Kind, state: TicketState) -> Notice:
        first = state.first_detection
        title = state.summary or (first.title or first.detection_cat if first else "") or "ticket"
        severity = event.severity if isinstance(event, ev.TicketCreated) else state.severity
        return Notice(
            trigger=kind,
            oid=state.oid,
            ticket_number=state.ticket_number,
            severity=severity,
            title=title,
            ticket_url=self._url(state.oid, state.ticket_number),
            detail=detail_of(event, e.metadata.get("actor")),
        )

    async def flush(self, conn: db.Connection) -> None:
        """Bursts whose minute is over with messages held: their roll-ups, queued (the row is
        emptied in the same transaction, so two relays cannot both queue one)."""
        async with conn.transaction():
            due = await conn.fetch(
                "WITH due AS (SELECT oid, rule, held, people FROM notification_bursts"
                "   WHERE held > 0 AND started_at <= now() - interval '1 minute' FOR UPDATE SKIP LOCKED)"
                " UPDATE notification_bursts b SET held = 0, people = '{}' FROM due"
                " WHERE (b.oid, b.rule) = (due.oid, due.rule)"
                " RETURNING b.oid, b.rule, b.started_at, b.count, due.held, b.trigger, b.channels,"
                " b.last_position, b.last_ticket, due.people"
            )
            if not due:
                return
            configs = await load_configs(conn, {r["oid"] for r in due})
            rows: list[Queued] = []
            for r in due:
                config = configs[r["oid"]]
                rule = next((x for x in config.notifications.rules if rule_key(x) == r["rule"]), None)
                if rule is None:  # the rule was changed meanwhile: its roll-up goes where it went
                    rule = NotificationRule(on=r["trigger"], channels=tuple(r["channels"]))
                burst = Burst(r["started_at"], r["count"], r["held"], r["last_ticket"], tuple(r["people"]))
                rows += _rollup(r["oid"], config, rule, burst, r["trigger"], r["last_position"])
            await conn.executemany(
                "INSERT INTO delivery_queue (channel, oid, position, subject, event_id, body)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                [(self.name, *row) for row in rows],
            )

    async def targets(self, conn: db.Connection, oids: list[str]) -> dict[str, Target]:
        return await notify_targets(conn, oids)

    def request(self, target: Target, row: Queued) -> Request:
        return _post(target, row, _decoder.decode(row.body))

    async def send(self, delivery: Delivery, target: Target, row: Queued) -> Outcome:
        m = _decoder.decode(row.body)
        if m.type != "email":
            if m.channel not in target.urls:
                return Outcome(True, f"channel {m.channel!r} has no webhook URL any more")
            return await delivery.send(signed(_post(target, row, m), target), self.refused)
        if self.mailer is None:
            return Outcome(False, "no mail server is configured (TICKETING_SMTP_URL)")
        assert m.to is not None
        done, error = await self.mailer.send(m.to, m.subject, m.text, f"{row.event_id}.{row.subject}")
        return Outcome(done, error)


def _post(target: Target, row: Queued, m: Message) -> Request:
    """A Slack or Teams message as the POST to its channel's webhook (a URL never logged)."""
    headers = {"Content-Type": "application/json", "X-Ticketing-Event-Id": str(row.event_id)}
    url, label = target.urls.get(m.channel, ""), f"notification {m.channel} {row.event_id}"
    return Request("POST", url, headers, _encoder.encode(m.payload), label, secret_url=True)


def _queued(
    config: OrgConfig,
    names: Iterable[str],
    notice: Notice,
    people: tuple[str, ...],
    position: int,
    event_id: UUID,
    subject_suffix: str = "",
    outcome: str = "queued",
) -> list[Queued]:
    """The rows of one notice to these channels of the org (e-mail: one per recipient, its
    `to` and the `people` the notice is about)."""
    by_name = {c.name: c for c in config.notifications.channels}
    rows = []
    for channel in (by_name[n] for n in names if n in by_name):
        for m in messages(channel, notice, email_recipients(channel, people)):
            rows.append(
                Queued(notice.oid, position, _subject(m) + subject_suffix, event_id, _encoder.encode(m))
            )
            metrics.NOTIFICATIONS.labels(m.type, outcome).inc()
    return rows


def _rollup(
    oid: str, config: OrgConfig, rule: NotificationRule, burst: Burst, trigger: Kind, position: int
) -> list[Queued]:
    """One message per channel of the rule, counting the messages the burst held."""
    notice = Notice(
        trigger, oid, burst.last_ticket, rule.min_severity or "low", "", None, rolled_up=burst.held
    )
    event_id = uuid.uuid5(_ROLLUP_IDS, f"{oid}|{rule_key(rule)}|{burst.started_at.isoformat()}")
    return _queued(config, rule.channels, notice, burst.people, position, event_id, "|rollup", "rollup")


def _subject(m: Message) -> str:
    """What sees its messages in order: each channel, and each recipient of an e-mail channel."""
    return f"{m.channel}|{m.to}" if m.to else m.channel
