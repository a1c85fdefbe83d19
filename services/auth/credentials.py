"""Issued tokens as records: listed and revoked by an org's admin, revocation seen by every API
process within REFRESH_S, last use recorded without a write per request."""

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
import msgspec

from services.eventstore import db

REFRESH_S = 5.0  # how stale a process's view of revocations may be


class TokenInfo(msgspec.Struct, frozen=True):
    jti: str
    subject: str
    orgs: list[str]
    permissions: dict[str, list[str]]
    operator: bool
    issued_at: datetime
    expires_at: datetime
    created_by: str
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None


async def record(conn: db.Connection, token: str, created_by: str) -> str:
    """Keep what a minted token grants (its claims, never the token); return its jti."""
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    perms: dict[str, list[str]] = claims.get("perms", {})
    await conn.execute(
        "INSERT INTO issued_tokens"
        " (jti, subject, orgs, permissions, operator, issued_at, expires_at, created_by)"
        " VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8) ON CONFLICT (jti) DO NOTHING",
        claims["jti"],
        claims["sub"],
        sorted(perms),
        msgspec.json.encode(perms).decode(),
        claims.get("operator") is True,
        datetime.fromtimestamp(claims["iat"], UTC),
        datetime.fromtimestamp(claims["exp"], UTC),
        created_by,
    )
    return str(claims["jti"])


async def list_tokens(conn: db.Connection, oid: str) -> list[TokenInfo]:
    rows = await conn.fetch(
        "SELECT jti, subject, orgs, permissions::text AS permissions, operator, issued_at, expires_at,"
        " created_by, last_used_at, revoked_at, revoked_by FROM issued_tokens"
        " WHERE orgs @> ARRAY[$1]::text[] ORDER BY issued_at",
        oid,
    )
    return [TokenInfo(**{**dict(r), "permissions": msgspec.json.decode(r["permissions"])}) for r in rows]


async def revoke(conn: db.Connection, jti: str, by: str, oid: str | None = None) -> bool:
    """Revoke a token (of that org, if one is named); False if there is no such live token."""
    done: str = await conn.execute(
        "UPDATE issued_tokens SET revoked_at = now(), revoked_by = $2"
        " WHERE jti = $1 AND revoked_at IS NULL AND ($3::text IS NULL OR orgs @> ARRAY[$3]::text[])",
        jti,
        by,
        oid,
    )
    return done.endswith(" 1")


@dataclass
class Revocations:
    """This process's view of the revoked, unexpired tokens (and console sessions), read again
    every REFRESH_S; the jtis seen since then get their last use written with it (one statement,
    not one per request)."""

    pool: db.Pool
    refresh_s: float = REFRESH_S
    _revoked: frozenset[str] = frozenset()
    _lost: dict[str, frozenset[str]] = field(default_factory=dict)  # jti -> orgs purged since minted
    _read_at: float = float("-inf")
    _used: set[str] = field(default_factory=set)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def revoked(self, jti: str) -> bool:
        if jti:
            self._used.add(jti)
        if time.monotonic() - self._read_at >= self.refresh_s:
            async with self._lock:
                if time.monotonic() - self._read_at >= self.refresh_s:
                    await self._refresh()
        return jti in self._revoked

    def lost_orgs(self, jti: str) -> frozenset[str]:
        """The orgs a token names that were unsubscribed since it was minted (as of the last read)."""
        return self._lost.get(jti, frozenset())

    async def _refresh(self) -> None:
        used, self._used = list(self._used), set()
        async with self.pool.acquire() as conn:
            if used:
                await conn.execute(
                    "UPDATE issued_tokens SET last_used_at = now() WHERE jti = ANY($1::text[])", used
                )
            # a revoked console session ends the live streams it opened, as a revoked token does
            rows = await conn.fetch(
                "SELECT jti FROM issued_tokens WHERE revoked_at IS NOT NULL AND expires_at > now()"
                " UNION ALL SELECT session_id FROM console_sessions"
                " WHERE revoked_at IS NOT NULL AND expires_at > now()"
            )
            narrowed = await conn.fetch(
                "SELECT jti, lost_orgs FROM issued_tokens"
                " WHERE cardinality(lost_orgs) > 0 AND revoked_at IS NULL AND expires_at > now()"
            )
        self._revoked = frozenset(r[0] for r in rows)
        self._lost = {r[0]: frozenset(r[1]) for r in narrowed}
        self._read_at = time.monotonic()
