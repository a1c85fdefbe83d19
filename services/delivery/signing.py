"""Signed outbound requests: a receiver can tell ours from anyone else's.

Every webhook and integration request carries `X-Ticketing-Signature: t=<unix time>,v1=<hex>`, an
HMAC-SHA256 with the org's secret over `<t>.` followed by the exact bytes of the body (the gzipped
bytes of a webhook), in the style Stripe's receivers verify. An org's secret is generated on first
use and shown once; rotating it keeps the previous one signing too (a second `v1`) for an overlap,
so receivers can switch without losing a message.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime

import msgspec

from services.eventstore import db, locks

HEADER = "X-Ticketing-Signature"
CURRENT, PREVIOUS = "signing_secret", "signing_secret_previous"  # their names in org_secrets


def sign(body: bytes, keys: Sequence[str], t: int) -> str:
    payload = f"{t}.".encode() + body
    return ",".join(
        [f"t={t}", *(f"v1={hmac.new(k.encode(), payload, hashlib.sha256).hexdigest()}" for k in keys)]
    )


def fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


async def signing_keys(conn: db.Connection, oids: Iterable[str]) -> dict[str, list[str]]:
    """Each org's keys that sign now (the current one first), generating the current one of an org
    that has none (first use: the only time this writes)."""
    wanted = list(set(oids))
    keys = await _keys(conn, wanted)
    missing = [oid for oid in wanted if not keys[oid]]
    if missing:
        await conn.executemany(
            "INSERT INTO org_secrets (oid, name, secret) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(oid, CURRENT, _new_secret()) for oid in missing],
        )
        keys.update(await _keys(conn, missing))
    return keys


async def _keys(conn: db.Connection, oids: list[str]) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT oid, secret FROM org_secrets WHERE oid = ANY($1::text[])"
        " AND (name = $2 OR (name = $3 AND valid_until > now())) ORDER BY oid, name = $3",
        oids,
        CURRENT,
        PREVIOUS,
    )
    keys: dict[str, list[str]] = {oid: [] for oid in oids}
    for oid, secret in rows:
        keys[oid].append(secret)
    return keys


class SigningSecretStatus(msgspec.Struct, frozen=True):
    """What the org's admin may see at any time: never the secret itself."""

    fingerprint: str | None
    created_at: datetime | None
    revealed: bool
    previous_fingerprint: str | None
    previous_valid_until: datetime | None


class RevealedSecret(msgspec.Struct, frozen=True):
    secret: str  # shown this once
    fingerprint: str
    previous_valid_until: datetime | None


class AlreadyRevealed(Exception):
    pass


async def status(conn: db.Connection, oid: str) -> SigningSecretStatus:
    rows = {
        r["name"]: r
        for r in await conn.fetch(
            "SELECT name, secret, set_at, revealed_at, valid_until FROM org_secrets"
            " WHERE oid = $1 AND (name = $2 OR (name = $3 AND valid_until > now()))",
            oid,
            CURRENT,
            PREVIOUS,
        )
    }
    current, previous = rows.get(CURRENT), rows.get(PREVIOUS)
    return SigningSecretStatus(
        fingerprint(current["secret"]) if current else None,
        current["set_at"] if current else None,
        bool(current and current["revealed_at"]),
        fingerprint(previous["secret"]) if previous else None,
        previous["valid_until"] if previous else None,
    )


async def reveal(conn: db.Connection, oid: str, rotate: bool, overlap_hours: int) -> RevealedSecret:
    """In the caller's transaction. Without `rotate`: the current secret, created if need be, if it
    was never shown (else AlreadyRevealed). With it: a new current secret; the old one keeps signing
    for `overlap_hours`."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", locks.SIGNING_SECRETS, oid)
    row = await conn.fetchrow(
        "SELECT secret, revealed_at FROM org_secrets WHERE oid = $1 AND name = $2", oid, CURRENT
    )
    if rotate and row is not None:
        await conn.execute(
            "INSERT INTO org_secrets (oid, name, secret, valid_until)"
            " VALUES ($1, $2, $3, now() + make_interval(hours => $4))"
            " ON CONFLICT (oid, name) DO UPDATE SET secret = EXCLUDED.secret, set_at = now(),"
            " valid_until = EXCLUDED.valid_until",
            oid,
            PREVIOUS,
            row["secret"],
            overlap_hours,
        )
        row = None
    elif row is not None and row["revealed_at"] is not None:
        raise AlreadyRevealed("the signing secret was shown once already: rotate it to get a new one")
    secret = row["secret"] if row is not None else _new_secret()
    await conn.execute(
        "INSERT INTO org_secrets (oid, name, secret, revealed_at) VALUES ($1, $2, $3, now())"
        " ON CONFLICT (oid, name) DO UPDATE SET secret = EXCLUDED.secret, revealed_at = now(),"
        " set_at = CASE WHEN org_secrets.secret = EXCLUDED.secret THEN org_secrets.set_at ELSE now() END",
        oid,
        CURRENT,
        secret,
    )
    previous = await conn.fetchval(
        "SELECT valid_until FROM org_secrets WHERE oid = $1 AND name = $2 AND valid_until > now()",
        oid,
        PREVIOUS,
    )
    return RevealedSecret(secret, fingerprint(secret), previous)
