"""An org admin's view of the org's credentials: the tokens that grant it, its API keys and the
console sessions (single sign-on) whose groups give a role in it, each with its last use, and
their revocation (by jti, key id or session id), effective on every API process within seconds."""

from typing import Annotated

import msgspec
from aiohttp import web

from services.api.auth import principal
from services.api.bodies import json_body
from services.api.context import POOL
from services.api.databases import pool_of
from services.api.errors import ApiError, invalid, not_found
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.api.sso import SSO
from services.auth import api_keys, credentials, sessions
from services.auth.tokens import PERMISSIONS


class Credentials(msgspec.Struct, frozen=True):
    tokens: list[credentials.TokenInfo]
    api_keys: list[api_keys.ApiKeyInfo]
    sessions: list[sessions.SessionInfo]  # empty without single sign-on


class Revoked(msgspec.Struct, frozen=True):
    revoked: str


class NewApiKey(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]*$")]
    permissions: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(min_length=1, max_length=5)
    ]


class CreatedApiKey(msgspec.Struct, frozen=True):
    """The key itself is in this answer only: the service keeps its digest."""

    key_id: str
    name: str
    permissions: list[str]
    key: str


async def create_api_key(request: web.Request) -> web.Response:
    oid = oid_of(request)
    body = await json_body(request, NewApiKey)
    permissions = sorted(set(body.permissions))
    if unknown := set(permissions) - set(PERMISSIONS):
        raise invalid("permissions", f"unknown {sorted(unknown)}; known: {', '.join(PERMISSIONS)}")
    async with request.app[POOL].acquire() as conn:
        try:
            key = await api_keys.create(conn, oid, body.name, permissions, principal(request).subject)
        except ValueError as exc:  # the org has a key of that name
            raise ApiError(409, str(exc), field="name") from None
    parsed = api_keys.parse(key)
    assert parsed is not None  # the key create just made
    return json_response(CreatedApiKey(parsed[0], body.name, permissions, key), status=201)


async def list_credentials(request: web.Request) -> web.Response:
    oid = oid_of(request)
    sso = request.app.get(SSO)
    groups = await _mapped_groups(request, oid) if sso else []
    async with request.app[POOL].acquire() as conn:  # the home database: credentials and sessions
        return json_response(
            Credentials(
                await credentials.list_tokens(conn, oid),
                await api_keys.list_keys(conn, oid),
                await sessions.list_sessions(conn, groups, sso.door.settings.idle_timeout_s) if sso else [],
            )
        )


async def _mapped_groups(request: web.Request, oid: str) -> list[str]:
    """The groups the org's role mappings name, from its configuration on its database."""
    async with pool_of(request).acquire() as conn:
        return await sessions.mapped_groups(conn, oid)


async def revoke_token(request: web.Request) -> web.Response:
    jti = request.match_info["jti"]
    async with request.app[POOL].acquire() as conn:
        if not await credentials.revoke(conn, jti, principal(request).subject, oid_of(request)):
            raise not_found(f"no live token {jti} grants this org")
    return json_response(Revoked(jti))


async def revoke_api_key(request: web.Request) -> web.Response:
    key_id = request.match_info["key_id"]
    async with request.app[POOL].acquire() as conn:
        if not await api_keys.revoke(conn, key_id, oid_of(request)):
            raise not_found(f"no active API key {key_id} of this org")
    return json_response(Revoked(key_id))


async def revoke_session(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    sso = request.app.get(SSO)
    groups = await _mapped_groups(request, oid_of(request)) if sso else []
    async with request.app[POOL].acquire() as conn:
        ended = sso is not None and await sessions.revoke(
            conn, session_id, principal(request).subject, groups, sso.door.settings.idle_timeout_s
        )
    if not ended:
        raise not_found(f"no live session {session_id} has a role in this org")
    return json_response(Revoked(session_id))
