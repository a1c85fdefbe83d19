"""Notifications' configuration and messages, pure (delivery is not wired yet: issue 32)."""

import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from domain import events as ev
from domain.config import DEFAULT_CONFIG, apply_patch
from domain.errors import InvalidValue
from domain.notices import (
    Notice,
    channels_for,
    email_message,
    mentions,
    rolled_up,
    slack_message,
    teams_message,
    trigger_of,
)
from domain.notifications import Notifications, split_channel_urls

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
HOOK = "https://hooks.slack.example/services/T000/B000/XXXX"
CONFIG = {
    "channels": [
        {"name": "soc", "type": "slack", "url": HOOK},
        {"name": "leads", "type": "teams", "url": "https://teams.example/webhook/1"},
        {"name": "mail", "type": "email", "to": ["lead@soc.example"]},
    ],
    "rules": [
        {"on": "ticket_opened", "min_severity": "high", "channels": ["soc", "leads"]},
        {"on": "ticket_opened", "channels": ["mail"]},
        {"on": "sla_breached", "channels": ["soc"]},
    ],
}


def configured() -> Notifications:
    patch, urls = split_channel_urls({"notifications": CONFIG}, Notifications())
    assert urls == {"soc": HOOK, "leads": "https://teams.example/webhook/1"}
    assert HOOK not in msgspec.json.encode(patch).decode()  # only the fingerprint goes on
    return apply_patch(DEFAULT_CONFIG, patch).notifications


def test_urls_become_fingerprints_and_rules_pick_channels_by_severity() -> None:
    n = configured()
    assert n.channels[0].url_fingerprint and n.channels[0].url_fingerprint.startswith("sha256:")
    assert [c.name for c in channels_for(n, "ticket_opened", "critical")] == ["soc", "leads", "mail"]
    assert [c.name for c in channels_for(n, "ticket_opened", "medium")] == ["mail"]
    assert [c.name for c in channels_for(n, "assigned", "critical")] == []


@pytest.mark.parametrize(
    ("notifications", "field"),
    [
        ({"channels": [{"name": "soc", "type": "slack"}]}, "notifications.channels[0].url"),
        ({"channels": [{"name": "m", "type": "email", "to": ["x@y"]}, {"name": "m", "type": "email"}]},
         "notifications.channels[1].name"),
        ({"rules": [{"on": "assigned", "channels": ["nowhere"]}]}, "notifications.rules[0].channels[0]"),
        ({"rules": [{"on": "sometimes", "channels": ["x"]}]}, "notifications.rules[0].on"),
        ({"channels": [{"name": "soc", "type": "slack", "url": "ftp://x"}]}, "notifications.channels[0].url"),
        ({"channels": [{"name": "soc", "type": "slack", "url_fingerprint": "sha256:0"}]},
         "notifications.channels[0].url_fingerprint"),
    ],
)  # fmt: skip
def test_invalid_notifications_name_the_field(notifications: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidValue) as err:
        patch, _ = split_channel_urls({"notifications": notifications}, Notifications())
        apply_patch(DEFAULT_CONFIG, patch)
    assert err.value.field.startswith(field), (err.value.field, str(err.value))


def test_mentions_and_triggers() -> None:
    text = "Looping in @ana@soc.example and @Bob@SOC.example, not me@x.example nor @ana@soc.example again"
    assert mentions(text) == ("ana@soc.example", "bob@soc.example")
    note = ev.NoteAdded(ts=T0, note_id=uuid.uuid4(), content=text, note_type="general")
    assert trigger_of(note) == "mentioned"
    assert trigger_of(ev.Assigned(ts=T0, old_assignee=None, assignee="a@x")) == "assigned"
    assert trigger_of(ev.Assigned(ts=T0, old_assignee="a@x", assignee=None)) is None
    assert trigger_of(ev.StatusChanged(ts=T0, from_status="new", to_status="escalated")) == "escalated"
    breach = ev.SlaBreached(ts=T0, kind="mtta", deadline=T0, target_minutes=15, severity="critical")
    assert trigger_of(breach) == "sla_breached"


def test_every_message_links_to_the_ticket() -> None:
    url = "https://soc.example/tickets/42?oid=o"
    n = Notice("ticket_opened", "o", 42, "critical", "lateral movement", url)
    assert url in slack_message(n)["text"] and "#42" in slack_message(n)["text"]
    card = teams_message(n)
    assert card["@type"] == "MessageCard" and card["potentialAction"][0]["targets"][0]["uri"] == url
    subject, body = email_message(n)
    assert subject.startswith("[critical]") and url in body
    rolled = Notice("ticket_opened", "o", 42, "critical", "x", url, count=500)
    assert "500 notifications" in slack_message(rolled)["text"]


def test_a_burst_rolls_up_per_minute() -> None:
    times = [T0 + timedelta(seconds=i / 10) for i in range(500)] + [T0 + timedelta(minutes=1, seconds=5)]
    alone, rolls = rolled_up(times, limit=20)
    assert rolls == [(T0, 500)] and alone == [500]
    assert rolled_up(times[:20], limit=20) == (list(range(20)), [])
