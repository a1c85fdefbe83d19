"""Org configuration: read for ingest and the API, changed through an audited event.

The org's configuration stream holds `config_updated` events; `org_configs` keeps the current
value and the stream version, written in the same transaction as the event.
"""

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from domain.config import DEFAULT_CONFIG, OrgConfig, apply_patch, decide_config, split_api_key
from domain.errors import InvalidValue
from domain.notifications import split_channel_urls
from services.commands.envelope import CommandContext, envelope
from services.eventstore import db
from services.eventstore import postgres as store

EXTRAHOP_API_KEY = "extrahop_api_key"  # the appliance's key, by its name in org_secrets
CHANNEL_URL = "notify:"  # a notification channel's webhook URL in org_secrets: this and the channel's name
CONFIG_NAMESPACE = uuid.UUID("0b7d9a52-93a4-4a4e-8b0d-2d7f3f1c6e21")
_decoder = msgspec.json.Decoder(OrgConfig)
_encoder = msgspec.json.Encoder()


def config_stream(oid: str) -> uuid.UUID:
    return uuid.uuid5(CONFIG_NAMESPACE, oid)


async def load_configs(conn: db.Connection, oids: Iterable[str]) -> dict[str, OrgConfig]:
    """Every org asked for; one that never changed its configuration gets the defaults."""
    wanted = list(set(oids))
    rows = await conn.fetch("SELECT oid, config::text FROM org_configs WHERE oid = ANY($1::text[])", wanted)
    found = {r[0]: _decoder.decode(r[1]) for r in rows}
    return {oid: found.get(oid, DEFAULT_CONFIG) for oid in wanted}


async def load_secrets(conn: db.Connection, name: str, oids: Iterable[str]) -> dict[str, str]:
    """The orgs' secrets of that name (integration keys), for the process that sends with them."""
    rows = await conn.fetch(
        "SELECT oid, secret FROM org_secrets WHERE name = $1 AND oid = ANY($2::text[])", name, list(set(oids))
    )
    return {r[0]: r[1] for r in rows}


async def _store_channel_urls(conn: db.Connection, oid: str, new: OrgConfig, urls: dict[str, str]) -> None:
    """The channels' webhook URLs go to org_secrets, never into the configuration or its events;
    those of channels no longer configured are deleted."""
    if urls:
        await conn.executemany(
            "INSERT INTO org_secrets (oid, name, secret) VALUES ($1, $2, $3)"
            " ON CONFLICT (oid, name) DO UPDATE SET secret = EXCLUDED.secret, set_at = now()",
            [(oid, CHANNEL_URL + name, url) for name, url in urls.items()],
        )
    await conn.execute(
        "DELETE FROM org_secrets WHERE oid = $1 AND starts_with(name, $2) AND NOT name = ANY($3::text[])",
        oid,
        CHANNEL_URL,
        [CHANNEL_URL + c.name for c in new.notifications.channels if c.url_fingerprint is not None],
    )


async def update_config(
    conn: db.Connection, oid: str, patch: dict[str, Any], ctx: CommandContext, now: datetime
) -> OrgConfig:
    """Apply a (partial) configuration in the caller's transaction; unchanged values record nothing.
    The ExtraHop API key goes to `org_secrets`, never into the configuration or its events."""
    row = await conn.fetchrow("SELECT config::text, version FROM org_configs WHERE oid = $1 FOR UPDATE", oid)
    current, version = (_decoder.decode(row[0]), row[1]) if row else (DEFAULT_CONFIG, 0)
    patch, api_key = split_api_key(patch)
    patch, channel_urls = split_channel_urls(patch, current.notifications)
    new = apply_patch(current, patch)
    if new.extrahop is not None and new.extrahop.api_key_fingerprint is None:
        raise InvalidValue("extrahop.api_key", "the appliance's API key is needed to track detections on it")
    if api_key is not None:
        await conn.execute(
            "INSERT INTO org_secrets (oid, name, secret) VALUES ($1, $2, $3)"
            " ON CONFLICT (oid, name) DO UPDATE SET secret = EXCLUDED.secret, set_at = now()",
            oid,
            EXTRAHOP_API_KEY,
            api_key,
        )
    elif new.extrahop is None and current.extrahop is not None:
        await conn.execute("DELETE FROM org_secrets WHERE oid = $1 AND name = $2", oid, EXTRAHOP_API_KEY)
    await _store_channel_urls(conn, oid, new, channel_urls)
    events = decide_config(oid, current, new, now)
    if not events:
        return current
    await store.append(
        conn,
        [
            store.StreamAppend(
                config_stream(oid),
                version,
                [envelope(e, ctx, oid) for e in events],
            )
        ],
    )
    await conn.execute(
        "INSERT INTO org_configs (oid, config, version) VALUES ($1, $2::jsonb, $3)"
        " ON CONFLICT (oid) DO UPDATE SET config = EXCLUDED.config, version = EXCLUDED.version",
        oid,
        _encoder.encode(new).decode(),
        version + len(events),
    )
    return new
