"""The console's single sign-on sessions, kept in PostgreSQL: the sign-ins under way (state, nonce,
PKCE verifier), the sessions (a cookie's digest, the user's groups, the CSRF token) and what each
session may do, worked out again at every request from the orgs' `role_mappings`, so that a
change of mapping, a revocation or a timeout holds from the next request on.
"""

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from domain.roles import ROLE_PERMISSIONS, permissions_for
from services.auth.oidc import Identity
from services.auth.tokens import WILDCARD_ORG, Principal
from services.eventstore import db
from services.eventstore.placement import at_once, on_pool

COOKIE: Final = "ticketing_session"
CSRF_HEADER: Final = "X-CSRF-Token"
LOGIN_TTL_S: Final = 600  # a sign-in must come back from the provider within this
TOUCH_S: Final = 60  # last_seen_at is written at most this often per session (the idle clock's step)
SOURCE: Final = "session"
SESSIONS_KEPT_DAYS: Final = 30

_mappings = msgspec.json.Decoder(dict[str, list[str]])


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class SessionInfo(msgspec.Struct, frozen=True):
    """A session as an org admin sees it: never its cookie nor its CSRF token."""

    session_id: str
    subject: str
    issuer: str
    groups: list[str]
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


async def begin_login(conn: db.Connection, state: str, nonce: str, verifier: str, return_to: str) -> None:
    await conn.execute(
        "DELETE FROM oidc_logins WHERE created_at < now() - make_interval(secs => $1)", LOGIN_TTL_S
    )
    await conn.execute(
        "INSERT INTO oidc_logins (state_digest, nonce, code_verifier, return_to) VALUES ($1, $2, $3, $4)",
        digest(state),
        nonce,
        verifier,
        return_to,
    )


async def finish_login(conn: db.Connection, state: str) -> tuple[str, str, str] | None:
    """The sign-in this state began (nonce, verifier, where to go after), once: a forged, replayed
    or stale state finds nothing."""
    row = await conn.fetchrow(
        "DELETE FROM oidc_logins WHERE state_digest = $1 RETURNING nonce, code_verifier, return_to,"
        " created_at > now() - make_interval(secs => $2) AS fresh",
        digest(state),
        LOGIN_TTL_S,
    )
    if row is None or not row["fresh"]:
        return None
    return row["nonce"], row["code_verifier"], row["return_to"]


async def open_session(conn: db.Connection, who: Identity, issuer: str, absolute_s: int) -> str:
    """A new session; returns the cookie's value (the only copy of it). Sessions over for
    SESSIONS_KEPT_DAYS go (the record of who signed in when is kept that long)."""
    await conn.execute(
        "DELETE FROM console_sessions WHERE expires_at < now() - make_interval(days => $1)",
        SESSIONS_KEPT_DAYS,
    )
    cookie = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO console_sessions (session_id, digest, subject, issuer, provider_sub, groups, csrf_token,"
        " id_token, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(secs => $9))",
        "sess_" + secrets.token_hex(8),
        digest(cookie),
        who.subject,
        issuer,
        who.provider_sub,
        list(who.groups),
        secrets.token_urlsafe(32),
        who.id_token,
        absolute_s,
    )
    return cookie


async def resolve(
    conn: db.Connection,
    cookie: str,
    idle_s: int,
    operator_group: str | None,
    elsewhere: Sequence[db.Pool] = (),
) -> Principal | None:
    """The principal a session cookie stands for now, or None (unknown, revoked, idle or over).
    `conn`: the home database's (sessions, and its orgs' configurations); `elsewhere`: the other
    databases of a placement, whose orgs' role mappings count too."""
    row = await conn.fetchrow(
        "SELECT session_id, subject, issuer, groups, csrf_token,"
        " last_seen_at < now() - make_interval(secs => $3) AS stale FROM console_sessions"
        " WHERE digest = $1 AND revoked_at IS NULL AND expires_at > now()"
        " AND last_seen_at > now() - make_interval(secs => $2)",
        digest(cookie),
        idle_s,
        TOUCH_S,
    )
    if row is None:
        return None
    if row["stale"]:
        await conn.execute(
            "UPDATE console_sessions SET last_seen_at = now() WHERE session_id = $1", row["session_id"]
        )
    groups: list[str] = row["groups"]
    permissions = await grants(conn, groups)
    # the orgs placed on other databases, whose role mappings are there
    for theirs in await at_once(on_pool(pool, lambda other: grants(other, groups)) for pool in elsewhere):
        permissions.update(theirs)
    operator = operator_group is not None and operator_group in groups
    if operator:
        permissions[WILDCARD_ORG] = frozenset(ROLE_PERMISSIONS)
    return Principal(
        subject=row["subject"],
        permissions=permissions,
        operator=operator,
        token_id=row["session_id"],
        source=f"{SOURCE}:{row['issuer']}",
        csrf_token=row["csrf_token"],
    )


async def grants(conn: db.Connection, groups: list[str]) -> dict[str, frozenset[str]]:
    """What these groups may do in each org of this database, by the orgs' role mappings."""
    mapped = await conn.fetch(
        "SELECT oid, config->'role_mappings' FROM org_configs WHERE config->'role_mappings' ?| $1::text[]",
        groups,
    )
    return {oid: perms for oid, raw in mapped if (perms := permissions_for(_mappings.decode(raw), groups))}


async def mapped_groups(conn: db.Connection, oid: str) -> list[str]:
    """The groups the org's role mappings name (on the org's database)."""
    keys: list[str] = await conn.fetchval(
        "SELECT ARRAY(SELECT jsonb_object_keys(config->'role_mappings') FROM org_configs"
        " WHERE oid = $1 AND jsonb_typeof(config->'role_mappings') = 'object')",
        oid,
    )
    return keys


async def end(conn: db.Connection, session_id: str, by: str) -> str | None:
    """Signed out: the session ends; its ID token, the provider's sign-out hint, is returned."""
    token: str | None = await conn.fetchval(
        "UPDATE console_sessions SET revoked_at = now(), revoked_by = $2, id_token = NULL"
        " WHERE session_id = $1 AND revoked_at IS NULL RETURNING coalesce(id_token, '')",
        session_id,
        by,
    )
    return token or None


# The live sessions with one of the org's mapped groups ($1: mapped_groups, read on its database).
_LIVE_IN_ORG: Final = (
    " FROM console_sessions s"
    " WHERE s.revoked_at IS NULL AND s.expires_at > now()"
    " AND s.last_seen_at > now() - make_interval(secs => $2)"
    " AND s.groups && $1::text[]"
)


async def list_sessions(conn: db.Connection, org_groups: list[str], idle_s: int) -> list[SessionInfo]:
    """The live sessions whose groups give a role in the org whose mapped groups these are."""
    rows = await conn.fetch(
        "SELECT s.session_id, s.subject, s.issuer, s.groups, s.created_at, s.last_seen_at, s.expires_at"
        + _LIVE_IN_ORG
        + " ORDER BY s.created_at DESC LIMIT 1000",
        org_groups,
        idle_s,
    )
    return [SessionInfo(**dict(r)) for r in rows]


async def revoke(conn: db.Connection, session_id: str, by: str, org_groups: list[str], idle_s: int) -> bool:
    """An org admin ends a session that has a role in their org (any other is not theirs to end)."""
    ended = await conn.fetchval(
        "UPDATE console_sessions SET revoked_at = now(), revoked_by = $3, id_token = NULL"
        " WHERE session_id = $4 AND session_id IN (SELECT s.session_id" + _LIVE_IN_ORG + ") RETURNING 1",
        org_groups,
        idle_s,
        by,
        session_id,
    )
    return ended is not None
