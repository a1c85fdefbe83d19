"""Notifications' configuration, who each message goes to, bursts and messages, pure."""

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
    count_in,
    email_message,
    email_recipients,
    mentions,
    personal,
    slack_message,
    teams_message,
    trigger_of,
)
from domain.notifications import NotificationChannel, Notifications, split_channel_urls

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
    rolled = Notice("ticket_opened", "o", 42, "critical", "x", url, rolled_up=500)
    assert "500 more notifications" in slack_message(rolled)["text"]


def test_a_burst_sends_its_first_messages_alone_and_holds_the_rest_for_one_roll_up() -> None:
    burst, sent, ended = None, 0, []
    for i in range(500):
        burst, alone, done = count_in(burst, T0 + timedelta(seconds=i / 10), limit=20)
        sent += alone
        ended += [done] if done else []
    assert sent == 20 and burst is not None and (burst.count, burst.held) == (500, 480) and ended == []
    # the next message after the minute starts a new burst and hands over the old one's roll-up
    later, alone, done = count_in(burst, T0 + timedelta(minutes=1, seconds=5), limit=20)
    assert alone and done == burst and (later.count, later.held) == (1, 0)
    # a minute that stayed within the limit has nothing to roll up
    quiet, _, _ = count_in(None, T0, limit=20)
    assert count_in(quiet, T0 + timedelta(minutes=2), limit=20)[2] is None


def test_email_goes_to_the_channel_list_plus_the_assignee_or_the_mentioned() -> None:
    mail = NotificationChannel(name="mail", type="email", to=("Lead@Soc.example",))
    assigned = ev.Assigned(ts=T0, old_assignee=None, assignee="ana@soc.example")
    assert email_recipients(mail, personal("assigned", assigned)) == ("lead@soc.example", "ana@soc.example")
    note = ev.NoteAdded(
        ts=T0, note_id=uuid.uuid4(), content="@bo@soc.example and @lead@soc.example look", note_type="general"
    )
    assert email_recipients(mail, personal("mentioned", note)) == ("lead@soc.example", "bo@soc.example")
    assert personal("ticket_opened", assigned) == ()


def test_a_roll_up_mails_everyone_its_held_messages_were_about() -> None:
    burst = None
    for i, who in enumerate(["a@x", "b@x", "a@x", "c@x", "b@x"]):
        burst, _, _ = count_in(burst, T0 + timedelta(seconds=i), limit=2, ticket_number=i + 1, people=(who,))
    assert burst is not None and burst.people == ("a@x", "c@x", "b@x") and burst.last_ticket == 5
