"""Every protected route passes here first: token (401), rate limit (429), org and permission (403/404).

Each route declares the permission it needs and where its org comes from; `guard` turns that
declaration into the checks, so a route cannot be added without them.
"""

import base64
import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, NamedTuple

import msgspec
from aiohttp import web

from services.api.bodies import form_body
from services.api.errors import ApiError, invalid
from services.api.params import MAX_ITEM_LENGTH, csv, no_nul
from services.api.ratelimit import RateLimiter, retry_after_header
from services.auth import sessions
from services.auth.api_keys import PREFIX as API_KEY_PREFIX
from services.auth.api_keys import ApiKeys
from services.auth.credentials import Revocations
from services.auth.tokens import InvalidToken, Principal, TokenService
from services.eventstore import db
from services.settings import OidcSettings

PRINCIPAL = web.RequestKey("principal", Principal)
REQUEST_ORGS = web.RequestKey("orgs", list[str])  # the orgs the guard authorized the request for
MAX_TOKEN_LENGTH = 8192
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclasses.dataclass(frozen=True)
class SessionDoor:
    """The console's sessions as a way in (with single sign-on configured): the cookie, when a
    request carries no Authorization header."""

    pool: db.Pool  # the home database: sessions
    settings: OidcSettings
    elsewhere: tuple[db.Pool, ...] = ()  # a placement's other databases: their orgs' role mappings


class OrgScope(StrEnum):
    ORGS = "oids query"  # oids=A,B: each must be allowed, else 403 naming the others
    ORG = "oid query"  # oid=A: an org the token cannot see answers 404
    PATH = "oid path"  # /config/{oid}
    BODY = "oid body"  # {"oid": ...} in the JSON body
    FORM = "oid form"  # oid=... in a form body (extension requests)
    KEY = "the API key's org"  # integration routes: only an org API key, and its one org
    SELF = "the credential itself"  # about the caller (whoami): any valid token, no org data
    OPERATOR = "operators only"  # /orgs/{oid}: an operator token with the permission on '*'


SIGNED_IN = "signed in"  # the permission of SELF routes: any valid credential


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Param(NamedTuple):
    """A query parameter, for the OpenAPI document."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


class Route(NamedTuple):
    """One route: its guard (permission, org scope) and its contract (for the OpenAPI document)."""

    method: str
    path: str
    handler: Handler
    permission: str | None  # None only for public probes
    scope: OrgScope | None = None
    summary: str = ""
    query: tuple[Param, ...] = ()
    body: Any = None  # a msgspec type
    response: Any = None  # a msgspec type
    status: int = 200


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def _unauthorized(reason: str) -> ApiError:
    return ApiError(401, reason, headers={"WWW-Authenticate": 'Bearer realm="ticketing"'})


async def authenticate(
    request: web.Request,
    tokens: TokenService,
    keys: ApiKeys,
    revocations: Revocations,
    door: SessionDoor | None = None,
) -> Principal:
    """A user's or service's token (`Bearer <jwt>`), or an org API key in any form an integration
    can send: `ExtraHop apikey=<key>`, `Bearer <key>`, or the password of HTTP Basic; without an
    Authorization header, the console's session cookie (single sign-on)."""
    header = request.headers.get("Authorization", "")
    if door is not None and not header and (cookie := request.cookies.get(sessions.COOKIE)):
        return await session_principal(request, door, cookie)
    scheme, _, rest = header.partition(" ")
    scheme, rest = scheme.lower(), rest.strip()
    if len(rest) > MAX_TOKEN_LENGTH:
        raise _unauthorized("invalid token")
    key = _api_key(scheme, rest)
    if key is not None:
        who = await keys.verify(key)
        if who is None:
            raise _unauthorized("invalid or revoked API key")
        return who
    if scheme != "bearer" or not rest:
        raise _unauthorized("a bearer token is required: Authorization: Bearer <token>")
    try:
        who = tokens.verify(rest)
    except InvalidToken:
        raise _unauthorized("invalid or expired token") from None
    if await revocations.revoked(who.token_id):
        raise _unauthorized("this token was revoked")
    if lost := revocations.lost_orgs(who.token_id):  # unsubscribed orgs are no longer the token's
        kept = {oid: perms for oid, perms in who.permissions.items() if oid not in lost}
        return dataclasses.replace(who, permissions=kept)
    return who


async def session_principal(request: web.Request, door: SessionDoor, cookie: str) -> Principal:
    """A live session's principal; a write it authorizes must carry the session's CSRF token (a
    cookie is sent by the browser whoever made the page that sends the request)."""
    who = None
    if len(cookie) <= 256:
        async with door.pool.acquire() as conn:
            who = await sessions.resolve(
                conn, cookie, door.settings.idle_timeout_s, door.settings.operator_group, door.elsewhere
            )
    if who is None:
        raise ApiError(401, "the session has ended (signed out, revoked or timed out): sign in again")
    if request.method not in SAFE_METHODS and not hmac.compare_digest(
        request.headers.get(sessions.CSRF_HEADER, "").encode(), who.csrf_token.encode()
    ):
        raise ApiError(403, f"a change made with a session needs its {sessions.CSRF_HEADER} header")
    return who


def _api_key(scheme: str, rest: str) -> str | None:
    if scheme == "extrahop":
        name, _, value = rest.partition("=")
        if name.strip().lower() != "apikey" or not value.strip():
            raise _unauthorized("expected Authorization: ExtraHop apikey=<key>")
        return value.strip()
    if scheme == "basic":
        try:
            _, _, password = base64.b64decode(rest, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise _unauthorized("malformed Basic credentials") from None
        return password
    if scheme == "bearer" and rest.startswith(API_KEY_PREFIX):
        return rest
    return None


async def _orgs(request: web.Request, scope: OrgScope) -> list[str]:
    if scope is OrgScope.ORGS:
        return csv(request.query, "oids", required=True)
    raw: Any
    if scope is OrgScope.ORG:
        raw = request.query.get("oid")
    elif scope is OrgScope.PATH:
        raw = request.match_info.get("oid")
    elif scope is OrgScope.FORM:
        raw = (await form_body(request)).get("oid")
    else:
        try:
            body = msgspec.json.decode(await request.read())
        except (msgspec.DecodeError, RecursionError):
            raise invalid("body", "the body is not valid JSON") from None
        raw = body.get("oid") if isinstance(body, dict) else None
    if not isinstance(raw, str) or not raw:
        raise invalid("oid", "oid is required")
    if len(raw) > MAX_ITEM_LENGTH:
        raise invalid("oid", f"oid is longer than {MAX_ITEM_LENGTH} characters")
    no_nul("oid", raw)
    return [raw]


def authorize(who: Principal, permission: str, scope: OrgScope, orgs: list[str]) -> None:
    if scope is OrgScope.ORGS:
        refused = [o for o in orgs if not who.has(permission, o)]
        if refused:
            raise ApiError(403, f"this token lacks {permission} on org(s) {', '.join(refused)}")
        return
    [oid] = orgs
    if not who.sees_org(oid):
        raise ApiError(404, "not found")  # never reveal that another org's data exists
    if not who.has(permission, oid):
        raise ApiError(403, f"this token lacks {permission} on org {oid}")


def guard(
    route: Route,
    tokens: TokenService,
    limiter: RateLimiter,
    keys: ApiKeys,
    revocations: Revocations,
    door: SessionDoor | None = None,
) -> Handler:
    if route.permission is None:
        return route.handler
    permission, scope, handler = route.permission, route.scope, route.handler
    if scope is None:
        raise ValueError(f"{route.method} {route.path} declares a permission but no org scope")

    async def guarded(request: web.Request) -> web.StreamResponse:
        who = await authenticate(request, tokens, keys, revocations, door)
        wait = limiter.take(who.token_id or who.subject)
        if wait:
            raise ApiError(429, "rate limit exceeded", headers={"Retry-After": retry_after_header(wait)})
        orgs: list[str] = []
        if scope is OrgScope.SELF:
            pass
        elif scope is OrgScope.OPERATOR:
            if not (who.operator and who.has(permission, request.match_info["oid"])):
                raise ApiError(403, f"this route is for operators (an operator token with {permission})")
            orgs = [request.match_info["oid"]]
        elif scope is OrgScope.KEY:
            if not who.api_key:  # an integration never holds a user's token
                raise ApiError(403, "this route takes an org API key: Authorization: ExtraHop apikey=<key>")
            orgs = list(who.permissions)
            authorize(who, permission, OrgScope.ORG, orgs)
        else:
            orgs = await _orgs(request, scope)
            authorize(who, permission, scope, orgs)
        request[PRINCIPAL] = who
        request[REQUEST_ORGS] = orgs
        return await handler(request)

    return guarded
