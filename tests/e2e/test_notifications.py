"""The team's day over Kafka, through the real processes (issue 32), with a real SMTP server
(aiosmtpd, STARTTLS and AUTH required) and local Slack and Teams receivers: a critical detection
is assigned by round robin, told to Slack and Teams and mailed to its assignee within 10 s, each
message linking to the ticket; a note mails whom it @mentions; a burst of 500 detections under one
rule gives one roll-up message, not 500. Then no secret (the SMTP password, the channels' webhook
URLs) is in any log line, GET answer, event or table."""

import json
import logging
import ssl
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from services.auth.tokens import TokenService
from services.devstack.embedded import free_port
from services.settings import Settings
from tests.e2e.conftest import Services, query
from tests.e2e.test_noise_control import publish

ORG = "e2e-notify"
PASSWORD = "smtp-Pa55-" + uuid.uuid4().hex
SLACK_SECRET, TEAMS_SECRET = "slack-" + uuid.uuid4().hex, "teams-" + uuid.uuid4().hex
TEAM = ["ana@soc.example", "bo@soc.example", "cy@soc.example"]
CONSOLE = "https://console.soc.example/tickets/$ticket_id?oid=$oid"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[list[str], EmailMessage]] = []
        self.logins: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.mails.append(
            (list(envelope.rcpt_tos), message_from_bytes(envelope.content, policy=policy.default))
        )
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == b"notifier"
            and data.password == PASSWORD.encode()
        )
        self.logins.append(data.login if isinstance(data, LoginPassword) else b"?")
        return AuthResult(success=ok)

    def to(self, address: str) -> list[EmailMessage]:
        return [m for rcpt, m in self.mails if address in rcpt]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[tuple[Inbox, int, Path]]:
    """A mail server that takes mail only over STARTTLS and after AUTH, with a certificate of its own CA."""
    cert, key = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box, port = Inbox(), free_port()
    # aiosmtpd warns of its own deprecated attribute at every AUTH, from its thread, after the test too
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    controller = Controller(
        box, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=box.authenticate, auth_required=True, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        yield box, port, cert
    finally:
        controller.stop()


class Hooks(ThreadingHTTPServer):
    """Slack's and Teams' incoming webhooks (the secret is the path), keeping each JSON body."""

    def __init__(self) -> None:
        self.got: dict[str, list[dict[str, Any]]] = {SLACK_SECRET: [], TEAMS_SECRET: []}
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hooks.got[self.path.rsplit("/", 1)[-1]].append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self, secret: str) -> str:
        return f"http://127.0.0.1:{self.server_port}/services/T0/B0/{secret}"


def call(services: Services, token: str, method: str, path: str, body: Any = None) -> tuple[int, Any, str]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", **({"Content-Type": "application/json"} if data else {})}
    request = urllib.request.Request(services.api + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            text = r.read().decode()
            return r.status, json.loads(text), text
    except urllib.error.HTTPError as e:
        text = e.read().decode()
        return e.code, json.loads(text), text


def detection(cat: str, priority: int = 9) -> dict[str, Any]:
    return {"detect_id": str(uuid.uuid4()), "cat": cat, "priority": priority,
            "ts": int(datetime.now(UTC).timestamp() * 1000),
            "routing": {"oid": ORG, "sid": "sensor-1", "hostname": "ws-1"}}  # fmt: skip


def test_notifications_reach_slack_teams_and_mail_and_leak_no_secret(
    services: Services, settings: Settings, smtp: tuple[Inbox, int, Path]
) -> None:
    box, port, cafile = smtp
    hooks = Hooks()
    services.env.update(
        TICKETING_SMTP_URL=f"smtp+starttls://notifier:{PASSWORD}@127.0.0.1:{port}",
        TICKETING_SMTP_CAFILE=str(cafile),
        TICKETING_TICKET_URL_TEMPLATE=CONSOLE,
        TICKETING_LOG_LEVEL="DEBUG",  # the most a log could say
    )
    services.start("api", "ingest", "projector", "relay")
    perms = ["investigation.get", "investigation.set", "org.conf.get", "org.conf.set"]
    token = TokenService(services.env["TICKETING_JWT_SECRET"]).mint(
        "lead@soc.example", {ORG: perms}, ttl_s=3600
    )
    notifications = {
        "channels": [
            {"name": "soc-slack", "type": "slack", "url": hooks.url(SLACK_SECRET)},
            {"name": "soc-teams", "type": "teams", "url": hooks.url(TEAMS_SECRET)},
            {"name": "people", "type": "email"},
        ],
        "rules": [
            {"on": "ticket_opened", "min_severity": "critical", "channels": ["soc-slack", "soc-teams"]},
            {"on": "assigned", "channels": ["people"]},
            {"on": "mentioned", "channels": ["people"]},
        ],
        "rollup_per_minute": 20,
    }
    routing = {"rules": [{"match": {"severity": ["critical"]}, "mode": "round_robin", "analysts": TEAM}]}
    status, body, text = call(services, token, "PUT", f"/api/v1/config/{ORG}",
                              {"notifications": notifications, "routing": routing})  # fmt: skip
    assert status == 200 and SLACK_SECRET not in text, body

    # One critical detection: assigned, told to Slack and Teams, mailed to its assignee, within 10 s.
    publish(settings, [detection("lateral_movement")])
    services.wait_for(lambda: hooks.got[SLACK_SECRET] and hooks.got[TEAMS_SECRET] and box.to(TEAM[0]), 10,
                      "Slack, Teams and the assignee's mail")  # fmt: skip
    [(assignee, actor)] = query(
        settings, "SELECT data->>'assignee', metadata->>'actor' FROM events"
        f" WHERE type = 'assigned' AND metadata->>'oid' = '{ORG}'",
    )  # fmt: skip
    link = CONSOLE.replace("$ticket_id", "1").replace("$oid", ORG)  # as ticket-events and webhooks link
    assert (assignee, actor) == (TEAM[0], "system:routing")
    [slack], [teams], [mail] = hooks.got[SLACK_SECRET], hooks.got[TEAMS_SECRET], box.to(TEAM[0])
    assert "New ticket: #1 [critical]" in slack["text"] and link in slack["text"]
    assert teams["potentialAction"][0]["targets"][0]["uri"] == link
    assert mail["Subject"].startswith("[critical] Assigned: #1") and link in mail.get_content()
    assert set(box.logins) == {b"notifier"}

    # A note that @mentions someone mails them.
    note = {"content": "@dee@soc.example please pull the proxy logs", "note_type": "general"}
    assert call(services, token, "POST", f"/api/v1/tickets/1/notes?oid={ORG}", note)[0] == 201
    services.wait_for(lambda: box.to("dee@soc.example"), 10, "the mention's mail")
    [mention] = box.to("dee@soc.example")
    assert "lead@soc.example mentioned you" in mention.get_content() and link in mention.get_content()

    # A burst of 500 critical detections (500 tickets) under one rule: 20 messages alone, then one
    # roll-up once the minute is over. The test moves time on: the minute of the first ticket's
    # messages is over before the burst, and the burst's own once it has been counted.
    minute_passes = "UPDATE notification_bursts SET started_at = started_at - interval '61 seconds'"
    query(settings, minute_passes)
    publish(settings, [detection(f"burst-{i}") for i in range(500)])
    counted = f"SELECT count FROM notification_bursts WHERE oid = '{ORG}' AND trigger = 'ticket_opened'"
    services.wait_for(lambda: query(settings, counted) == [(500,)], 60, "the burst counted")
    time.sleep(2)
    assert len(hooks.got[SLACK_SECRET]) == 1 + 20  # the first ticket's, and the burst's first 20
    query(settings, minute_passes)
    services.wait_for(
        lambda: (
            len(hooks.got[SLACK_SECRET]) == 22 and len(hooks.got[TEAMS_SECRET]) == 22 and len(box.mails) == 25
        ),
        15,
        "roll-ups",
    )
    assert hooks.got[SLACK_SECRET][-1]["text"].startswith(
        "480 more notifications (New ticket) within a minute"
    )
    rolled = [m for m in box.mails if "more notifications (Assigned)" in str(m[1]["Subject"])]
    assert {r for rcpt, _ in rolled for r in rcpt} == set(TEAM)  # each analyst told of the rest at once
    # 25 mails: the first assignment, the mention, the burst's first 20 assignments and 3 roll-ups
    time.sleep(2)
    assert len(hooks.got[SLACK_SECRET]) == 22  # nothing more

    # No secret anywhere: log lines, GET answers, events, tables.
    secrets = [PASSWORD, SLACK_SECRET, TEAMS_SECRET]
    services.stop_all()
    for log in services.logs.glob("*.log"):
        text = log.read_text(errors="replace")
        assert not [s for s in secrets if s in text], log.name
    services.start("api")  # again, its log read above
    for path in (f"/api/v1/config/{ORG}", f"/api/v1/config/{ORG}/notifications", f"/api/v1/tickets/1?oid={ORG}",
                 f"/api/v1/tickets?oids={ORG}", f"/api/v1/dashboard/counts?oids={ORG}"):  # fmt: skip
        status, _, text = call(services, token, "GET", path)
        assert status == 200 and not [s for s in secrets if s in text], path
    tables = [r[0] for r in query(settings, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                                            " AND tablename <> 'org_secrets'")]  # fmt: skip
    for secret in secrets:
        found = [
            t
            for t in tables
            if query(settings, f"SELECT count(*) FROM {t} x WHERE x::text LIKE '%{secret}%'")[0][0]
        ]
        assert found == [], (secret, found)
