"""Notifications delivered (issue 32), through the delivery queue to real receivers: a local
HTTP endpoint for Slack and Teams, and a real SMTP server (aiosmtpd). A critical ticket tells
Slack and Teams and mails its assignee, a note mails whom it @mentions, a burst over the org's
limit rolls up into one message once its minute is over, and a failing channel shows in the
notifications' status."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from domain.commands import AddNote
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands.envelope import CommandContext
from services.commands.handlers import execute_one
from services.delivery.mail import Mailer
from services.devstack.embedded import free_port
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.outbound.deliveries import Delivery, deliver, enqueue
from services.outbound.notifications import NOTIFICATIONS_NAME, Notifications
from services.settings import SmtpSettings
from tests.conftest import bearer
from tests.integration.support import configure, ingest, lc, serve

ORG = "notify-deliver"
TEMPLATE = "https://soc.example/tickets/$ticket_id?oid=$oid"
TEAM = ["ana@soc.example", "bo@soc.example"]


class Inbox:
    """A real SMTP server on loopback that keeps what it is given."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.mails.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.mails if address in rcpt]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


class Hooks:
    """Slack's and Teams' incoming webhooks, on loopback: each answers 200 unless told otherwise."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {"slack": [], "teams": []}
        self.status = 200
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if self.status == 200:
            self.got[request.match_info["kind"]].append(await request.json())
        return web.Response(status=self.status, text="ok")

    def url(self, kind: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/{kind}/T000/B000/secret-{kind}-path"))


@pytest.fixture
async def hooks() -> AsyncIterator[Hooks]:
    h = Hooks()
    app = web.Application()
    app.router.add_post("/{kind}/T000/B000/{secret}", h.handle)
    h.server = TestServer(app)
    await h.server.start_server()
    yield h
    await h.server.close()


def notifier(port: int | None) -> Notifications:
    smtp = SmtpSettings("127.0.0.1", port, False, False, None, None, "SOC <soc@example>") if port else None
    return Notifications(TEMPLATE, Mailer(smtp) if smtp else None)


async def pass_(pool: db.Pool, channel: Notifications) -> int:
    """What the relay's notification loops do: queue what the log holds, then one delivery pass."""

    async def handle(conn: db.Connection, events: list[Any]) -> None:
        await enqueue(conn, channel, events)

    await catch_up(pool, NOTIFICATIONS_NAME, handle, orgs=channel.orgs)
    async with aiohttp.ClientSession() as session:
        return await deliver(pool, channel, Delivery(session, timeout_s=5, pause_s=0.01))


async def setup(pool: db.Pool, hooks: Hooks, **notifications: Any) -> None:
    channels = [
        {"name": "soc-slack", "type": "slack", "url": hooks.url("slack")},
        {"name": "soc-teams", "type": "teams", "url": hooks.url("teams")},
        {"name": "mail", "type": "email", "to": ["lead@soc.example"]},
        {"name": "direct", "type": "email"},
    ]
    rules = [
        {"on": "ticket_opened", "min_severity": "critical", "channels": ["soc-slack", "soc-teams"]},
        {"on": "assigned", "channels": ["direct"]},
        {"on": "mentioned", "channels": ["direct"]},
        {"on": "sla_breached", "channels": ["mail"]},
    ]
    await configure(
        pool,
        ORG,
        routing={"rules": [{"match": {}, "mode": "round_robin", "analysts": TEAM}]},
        notifications={"channels": channels, "rules": rules, **notifications},
    )


async def test_a_critical_ticket_tells_slack_and_teams_and_mails_its_assignee(
    pool: db.Pool, hooks: Hooks, inbox: tuple[Inbox, int]
) -> None:
    box, port = inbox
    await setup(pool, hooks)
    channel = notifier(port)
    await ingest(pool, [lc(ORG, 0, cat="lateral_movement", priority=9)])
    assert await pass_(pool, channel) == 3
    [slack], [teams] = hooks.got["slack"], hooks.got["teams"]
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT stream_id, data->>'assignee' FROM events WHERE type = 'assigned' AND metadata->>'oid' = $1",
            ORG,
        )
    assert row is not None
    ticket_id, assignee = row
    link = f"https://soc.example/tickets/1?oid={ORG}"  # as ticket-events and webhooks link
    assert "New ticket: #1 [critical]" in slack["text"] and link in slack["text"]
    assert teams["@type"] == "MessageCard" and teams["potentialAction"][0]["targets"][0]["uri"] == link
    [mail] = box.to(assignee)
    assert assignee == TEAM[0] and mail["Subject"].startswith("[critical] Assigned: #1")
    assert link in mail.get_content() and box.to("lead@soc.example") == []  # "direct" has no list
    # A note that @mentions someone mails them (and nobody else), with the link.
    handler = make_handler()
    note = "@carol@soc.example can you look at the proxy logs? cc @bo@soc.example"
    writer = CommandContext(actor="ana@soc.example")
    await execute_one(pool, handler, AddNote(ticket_id, uuid.uuid4(), note), writer)
    assert await pass_(pool, channel) == 2
    [to_carol], [to_bo] = box.to("carol@soc.example"), box.to("bo@soc.example")
    assert "ana@soc.example mentioned you" in to_carol.get_content() and link in to_carol.get_content()
    assert to_bo["Subject"] == to_carol["Subject"] and len(box.mails) == 3
    assert await pass_(pool, channel) == 0  # nothing twice


async def test_a_burst_over_the_limit_rolls_up_into_one_message(
    pool: db.Pool, hooks: Hooks, inbox: tuple[Inbox, int]
) -> None:
    await setup(pool, hooks, rollup_per_minute=5)
    channel = notifier(inbox[1])
    await ingest(pool, [lc(ORG, i / 100, cat=f"burst-{i}", priority=9) for i in range(120)], batch=25)
    await pass_(pool, channel)
    assert len(hooks.got["slack"]) == 5  # the first five alone; the rest held for the roll-up
    await pass_(pool, channel)
    assert len(hooks.got["slack"]) == 5  # not before the minute is over
    async with pool.acquire() as conn:  # the minute passes
        await conn.execute("UPDATE notification_bursts SET started_at = started_at - interval '61 seconds'")
    await pass_(pool, channel)
    await pass_(pool, channel)
    texts = [m["text"] for m in hooks.got["slack"]]
    assert len(texts) == 6 and texts[-1].startswith("115 more notifications (New ticket) within a minute"), (
        texts
    )
    assert [m["summary"] for m in hooks.got["teams"]][-1].startswith("115 more notifications")
    assert len(hooks.got["teams"]) == 6
    box = inbox[0]
    rolled = [(rcpt, str(m["Subject"])) for rcpt, m in box.mails if "more notifications" in str(m["Subject"])]
    assert sorted(r for rcpt, _ in rolled for r in rcpt) == TEAM, box.mails


async def test_failures_show_in_the_notifications_status(
    pool: db.Pool, hooks: Hooks, tokens: TokenService
) -> None:
    await setup(pool, hooks)
    hooks.status = 503
    channel = notifier(None)  # and no mail server configured
    await ingest(pool, [lc(ORG, 0, priority=9)])
    assert await pass_(pool, channel) == 0
    client = await serve(pool, tokens)
    try:
        admin = bearer(tokens.mint("lead@x", {ORG: ["org.conf.get"]}, ttl_s=600))
        r = await client.get(f"/api/v1/config/{ORG}/notifications", headers=admin)
        shown = await r.json()
        assert r.status == 200 and shown["waiting"] == 3 and shown["url"] is None, shown
        assert shown["last_error"] in ("HTTP 503", "no mail server is configured (TICKETING_SMTP_URL)")
        assert "secret-slack-path" not in json.dumps(shown)
    finally:
        await client.close()
    hooks.status = 200
    async with pool.acquire() as conn:  # the retry pause passes
        await conn.execute("UPDATE delivery_queue SET last_attempt_at = $1", datetime(2026, 1, 1, tzinfo=UTC))
    assert await pass_(pool, notifier(None)) == 2  # Slack and Teams; the mail waits for a server
    await asyncio.sleep(0)
