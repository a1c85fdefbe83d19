"""Notifications' configuration: an org's channels (Slack and Teams incoming webhooks, e-mail) and
its rules (`on` a kind of event, from a severity up, to channels). A channel's webhook URL is a
secret: the configuration keeps only its fingerprint, as it does the ExtraHop key. What a message
says is domain.notices.
"""

import re
from typing import Annotated, Any, Final, Literal

import msgspec

from domain.errors import InvalidValue
from domain.fingerprints import fingerprint
from domain.routing import Analyst
from domain.severity import Severity

ChannelType = Literal["slack", "teams", "email"]
Trigger = Literal["ticket_opened", "assigned", "escalated", "sla_at_risk", "sla_breached", "mentioned"]
ChannelName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
MAX_CHANNELS: Final = 20
MAX_RULES: Final = 100


class NotificationChannel(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: ChannelName
    type: ChannelType
    # slack and teams: the incoming webhook's URL is write-only (PUT takes `url`); this shows one is set
    url_fingerprint: str | None = None
    to: Annotated[tuple[Analyst, ...], msgspec.Meta(max_length=50)] = ()  # email: who always gets it


class NotificationRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    on: Trigger
    channels: Annotated[tuple[ChannelName, ...], msgspec.Meta(min_length=1, max_length=MAX_CHANNELS)]
    min_severity: Severity | None = None


class Notifications(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    channels: Annotated[tuple[NotificationChannel, ...], msgspec.Meta(max_length=MAX_CHANNELS)] = ()
    rules: Annotated[tuple[NotificationRule, ...], msgspec.Meta(max_length=MAX_RULES)] = ()
    # More messages than this for one rule within a minute become one message that counts them.
    rollup_per_minute: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


def validate_notifications(n: Notifications) -> None:
    names: dict[str, NotificationChannel] = {}
    for i, c in enumerate(n.channels):
        if c.name in names:
            raise InvalidValue(f"notifications.channels[{i}].name", f"two channels are named {c.name!r}")
        names[c.name] = c
        if c.type in ("slack", "teams") and c.url_fingerprint is None:
            raise InvalidValue(
                f"notifications.channels[{i}].url", f"a {c.type} channel needs its webhook url"
            )
        if c.type == "email" and c.url_fingerprint is not None:
            raise InvalidValue(f"notifications.channels[{i}].url", "an e-mail channel has no url")
    for i, rule in enumerate(n.rules):
        for j, name in enumerate(rule.channels):
            if name not in names:
                raise InvalidValue(f"notifications.rules[{i}].channels[{j}]", f"no channel is named {name!r}")


def split_channel_urls(
    patch: dict[str, Any], current: Notifications
) -> tuple[dict[str, Any], dict[str, str]]:
    """The patch as the configuration may hold it, and the channels' webhook URLs it carried (by
    channel name): each URL is replaced by its fingerprint, so no URL reaches the event store. A
    channel given again without its url keeps the one it has (a PUT replaces the list whole, and
    the URL is never shown to be sent back)."""
    section = patch.get("notifications")
    channels = section.get("channels") if isinstance(section, dict) else None
    if not isinstance(channels, list):
        return patch, {}
    known: dict[tuple[Any, Any], str] = {
        (c.name, c.type): c.url_fingerprint for c in current.channels if c.url_fingerprint
    }
    urls: dict[str, str] = {}
    kept = []
    for i, c in enumerate(channels):
        if not isinstance(c, dict):
            kept.append(c)
            continue
        if "url_fingerprint" in c:
            raise InvalidValue(f"notifications.channels[{i}].url_fingerprint", "set by the service from url")
        if "url" not in c:
            had = known.get((c.get("name"), c.get("type")))
            kept.append(c if had is None else {**c, "url_fingerprint": had})
            continue
        url = c["url"]
        if not isinstance(url, str) or not re.fullmatch(r"https?://[!-~]{1,2040}", url):
            raise InvalidValue(f"notifications.channels[{i}].url", "an http(s) URL, printable without spaces")
        urls[str(c.get("name"))] = url
        kept.append({**{k: v for k, v in c.items() if k != "url"}, "url_fingerprint": fingerprint(url)})
    assert isinstance(section, dict)
    return {**patch, "notifications": {**section, "channels": kept}}, urls
