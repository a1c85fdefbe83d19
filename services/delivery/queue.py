"""The delivery queue as both sides see it: each channel's name and where an org's requests of it
go (its target), and what an org's admin sees of its backlog."""

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final, NamedTuple

import msgspec

from services.commands.configs import CHANNEL_URL, EXTRAHOP_API_KEY, load_configs, load_secrets
from services.eventstore import db

WEBHOOK: Final = "webhook"  # the channels' names in delivery_queue
EXTRAHOP: Final = "extrahop"
NOTIFY: Final = "notify"


class Target(NamedTuple):
    """Where an org's requests of one channel go, the secret they are sent with, if any, and the
    keys that sign them (signing.py)."""

    url: str  # empty where each request names its own (notifications: url_of)
    secret: str | None = None
    signing: tuple[str, ...] = ()
    urls: Mapping[str, str] = MappingProxyType({})  # notifications: each channel's webhook URL, by name


# Which orgs could have a target of each channel, as a filter on the stored configurations: a
# superset of what the targets below find (those decide), so that a channel's subscription reads
# the events of those orgs only. Stored configurations are whole (every field, defaults included).
_MAY_HAVE_TARGETS: Final = {
    WEBHOOK: "config->>'webhook_url' IS NOT NULL",
    EXTRAHOP: "config->'extrahop'->>'enabled' = 'true'",
    NOTIFY: "jsonb_array_length(config->'notifications'->'channels') > 0",
}


async def orgs_with_targets(conn: db.Connection, channel: str) -> list[str]:
    rows = await conn.fetch(f"SELECT oid FROM org_configs WHERE {_MAY_HAVE_TARGETS[channel]}")
    return [r[0] for r in rows]


async def webhook_targets(conn: db.Connection, oids: list[str]) -> dict[str, Target]:
    return {o: Target(c.webhook_url) for o, c in (await load_configs(conn, oids)).items() if c.webhook_url}


async def extrahop_targets(conn: db.Connection, oids: list[str]) -> dict[str, Target]:
    keys = await load_secrets(conn, EXTRAHOP_API_KEY, oids)
    return {
        o: Target(c.extrahop.url.rstrip("/"), keys[o])
        for o, c in (await load_configs(conn, oids)).items()
        if c.extrahop is not None and c.extrahop.enabled and o in keys
    }


async def notify_targets(conn: db.Connection, oids: list[str]) -> dict[str, Target]:
    """Orgs with a notification channel, and their channels' webhook URLs (org_secrets)."""
    configs = await load_configs(conn, oids)
    notifying = [o for o, c in configs.items() if c.notifications.channels]
    rows = await conn.fetch(
        "SELECT oid, name, secret FROM org_secrets WHERE oid = ANY($1::text[]) AND starts_with(name, $2)",
        notifying,
        CHANNEL_URL,
    )
    urls: dict[str, dict[str, str]] = {o: {} for o in notifying}
    for oid, name, secret in rows:
        urls[oid][name.removeprefix(CHANNEL_URL)] = secret
    return {o: Target("", urls=MappingProxyType(u)) for o, u in urls.items()}


TARGETS = {WEBHOOK: webhook_targets, EXTRAHOP: extrahop_targets, NOTIFY: notify_targets}


class DeliveryStatus(msgspec.Struct, frozen=True):
    """What an org's admin needs to see that its endpoint is failing, since when, and what it refused."""

    url: str | None
    waiting: int  # requests not delivered yet
    first_failed_at: datetime | None  # of the oldest failed one
    last_attempt_at: datetime | None
    last_error: str | None  # why the oldest failed one has not gone through
    refused: int  # requests the endpoint refused (skipped), ever
    last_refusal: str | None
    last_refused_at: datetime | None


async def status(conn: db.Connection, channel: str, oid: str) -> DeliveryStatus:
    target = (await TARGETS[channel](conn, [oid])).get(oid)
    row = await conn.fetchrow(
        "SELECT count(*), min(first_failed_at), max(last_attempt_at),"
        " (array_agg(last_error ORDER BY position) FILTER (WHERE last_error IS NOT NULL))[1],"
        " (SELECT refused FROM delivery_refusals WHERE channel = $1 AND oid = $2),"
        " (SELECT last_refusal FROM delivery_refusals WHERE channel = $1 AND oid = $2),"
        " (SELECT last_refused_at FROM delivery_refusals WHERE channel = $1 AND oid = $2)"
        " FROM delivery_queue WHERE channel = $1 AND oid = $2",
        channel,
        oid,
    )
    assert row is not None  # an aggregate always answers one row
    waiting, first_failed_at, last_attempt_at, last_error, refused, last_refusal, last_refused_at = row
    return DeliveryStatus(
        target.url if target and target.url else None,  # none for notifications: theirs are secrets
        waiting,
        first_failed_at,
        last_attempt_at,
        last_error,
        refused or 0,
        last_refusal,
        last_refused_at,
    )
