"""Org API keys: `shk_<key id>_<secret>`, minted by the token command, stored as a digest.

A key belongs to one org and holds narrow permissions (by default only `ticket.track`: create and
update tickets through the work-tracker routes). It is presented the ways an ExtraHop ODS target or
a script can send it: `Authorization: ExtraHop apikey=<key>`, `Bearer <key>`, or as the password
of HTTP Basic. Verified keys are remembered for CACHE_S, so a revocation takes effect within that.
"""

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

import asyncpg
import msgspec

from services.auth.tokens import PERMISSIONS, Principal
from services.eventstore import db

PREFIX: Final = "shk_"
TRACK: Final = "ticket.track"
CACHE_S: Final = 5.0  # a revoked key is refused by every API process within this
_SHAPE = re.compile(r"shk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def parse(text: str) -> tuple[str, str] | None:
    """(key id, secret) of something shaped like a key, else None."""
    match = _SHAPE.fullmatch(text.strip())
    return (match[1], match[2]) if match else None


class ApiKeyInfo(msgspec.Struct, frozen=True):
    key_id: str
    oid: str
    name: str
    permissions: list[str]
    created_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None


async def create(conn: db.Connection, oid: str, name: str, permissions: list[str], by: str) -> str:
    """A new key for the org; the only time its secret is seen."""
    unknown = set(permissions) - set(PERMISSIONS)
    if unknown or not permissions:
        raise ValueError(f"permissions must be some of {', '.join(PERMISSIONS)} (got {sorted(unknown)})")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    try:
        await conn.execute(
            "INSERT INTO api_keys (key_id, oid, name, secret_sha256, permissions, created_by)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            key_id, oid, name, digest(secret), permissions, by,
        )  # fmt: skip
    except asyncpg.UniqueViolationError:
        raise ValueError(f"org {oid} already has a key named {name!r}") from None
    return f"{PREFIX}{key_id}_{secret}"


async def list_keys(conn: db.Connection, oid: str) -> list[ApiKeyInfo]:
    rows = await conn.fetch(
        "SELECT key_id, oid, name, permissions, created_at, created_by, last_used_at, revoked_at"
        " FROM api_keys WHERE oid = $1 ORDER BY created_at",
        oid,
    )
    return [ApiKeyInfo(**dict(r)) for r in rows]


async def revoke(conn: db.Connection, key_id: str, oid: str | None = None) -> bool:
    """Revoke a key (of that org, if one is named); False if there is no such active key."""
    done: str = await conn.execute(
        "UPDATE api_keys SET revoked_at = now()"
        " WHERE key_id = $1 AND revoked_at IS NULL AND ($2::text IS NULL OR oid = $2)",
        key_id,
        oid,
    )
    return done.endswith(" 1")


@dataclass
class ApiKeys:
    """Verifies presented keys against the table, remembering good ones for CACHE_S."""

    pool: db.Pool
    _seen: dict[str, tuple[Principal, float]] = field(default_factory=dict, repr=False)

    async def verify(self, text: str) -> Principal | None:
        hit = self._seen.get(text)
        now = time.monotonic()
        if hit is not None and now < hit[1]:
            return hit[0]
        parsed = parse(text)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT oid, name, secret_sha256, permissions FROM api_keys"
                " WHERE key_id = $1 AND revoked_at IS NULL",
                key_id,
            )
            if row is None or not hmac.compare_digest(bytes(row["secret_sha256"]), digest(secret)):
                return None
            await conn.execute("UPDATE api_keys SET last_used_at = now() WHERE key_id = $1", key_id)
        who = Principal(
            subject=f"apikey:{row['name']}",
            permissions={row["oid"]: frozenset(row["permissions"])},
            token_id=key_id,
            api_key=True,
            source="api_key",
        )
        if len(self._seen) >= 10_000:
            self._seen.clear()
        self._seen[text] = (who, now + CACHE_S)
        return who
