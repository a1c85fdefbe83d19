"""The delivery queue as both sides see it: each channel's name and where an org's requests of it
go (its target), and what an org's admin sees of its backlog."""

from datetime import datetime
from typing import Final, NamedTuple

import msgspec

from services.commands.configs import EXTRAHOP_API_KEY, load_configs, load_secrets
from services.eventstore import db

WEBHOOK: Final = "webhook"  # the channels' names in delivery_queue
EXTRAHOP: Final = "extrahop"


class Target(NamedTuple):
    """Where an org's requests of one channel go, the secret they are sent with, if any, and the
    keys that sign them (signing.py)."""

    url: str
    secret: str | None = None
    signing: tuple[str, ...] = ()


async def webhook_targets(conn: db.Connection, oids: list[str]) -> dict[str, Target]:
    return {o: Target(c.webhook_url) for o, c in (await load_configs(conn, oids)).items() if c.webhook_url}


async def extrahop_targets(conn: db.Connection, oids: list[str]) -> dict[str, Target]:
    keys = await load_secrets(conn, EXTRAHOP_API_KEY, oids)
    return {
        o: Target(c.extrahop.url.rstrip("/"), keys[o])
        for o, c in (await load_configs(conn, oids)).items()
        if c.extrahop is not None and c.extrahop.enabled and o in keys
    }


TARGETS = {WEBHOOK: webhook_targets, EXTRAHOP: extrahop_targets}


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
        target.url if target else None,
        waiting,
        first_failed_at,
        last_attempt_at,
        last_error,
        refused or 0,
        last_refusal,
        last_refused_at,
    )
