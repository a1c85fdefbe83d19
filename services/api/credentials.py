"""An org admin's view of the org's credentials: the tokens that grant it and its API keys, each
with its last use, and their revocation (by jti or key id), effective on every API process within
seconds."""

import msgspec
from aiohttp import web

from services.api.auth import principal
from services.api.context import POOL
from services.api.errors import not_found
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.auth import api_keys, credentials


class Credentials(msgspec.Struct, frozen=True):
    tokens: list[credentials.TokenInfo]
    api_keys: list[api_keys.ApiKeyInfo]


class Revoked(msgspec.Struct, frozen=True):
    revoked: str


async def list_credentials(request: web.Request) -> web.Response:
    oid = oid_of(request)
    async with request.app[POOL].acquire() as conn:
        return json_response(
            Credentials(await credentials.list_tokens(conn, oid), await api_keys.list_keys(conn, oid))
        )


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
