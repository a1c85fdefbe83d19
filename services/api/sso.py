"""Single sign-on for the console: `/auth/login` sends the browser to the identity provider,
`/auth/callback` takes it back and opens a session (an HttpOnly cookie), `/auth/logout` ends it
here and, where the provider offers it, there too. These are the browser's doors, not the API's:
every API route still takes its token or API key, and the session cookie only when a request
carries no Authorization header (services/api/auth.py).
"""

import html
import logging
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import Final

import msgspec
from aiohttp import web

from services.api.auth import SessionDoor, session_principal
from services.api.context import POOL
from services.api.errors import ApiError
from services.api.responses import json_response
from services.auth import sessions
from services.auth.oidc import OidcProvider, SignInRefused, pkce_pair

log = logging.getLogger(__name__)

MAX_PARAM: Final = 4096
_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Sso:
    provider: OidcProvider
    door: SessionDoor


SSO = web.AppKey("sso", Sso)


class Methods(msgspec.Struct, frozen=True):
    token: bool
    oidc: bool


class SignedOut(msgspec.Struct, frozen=True):
    signed_out: bool
    end_session_url: str | None  # where the browser goes to sign out at the provider too


def _failed(status: int, reason: str) -> web.Response:
    """A page the browser shows: the reason (never a token), and the way back."""
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign-in failed</title>'
        '<link rel="stylesheet" href="/console/console.css"></head><body><main id="main">'
        f"<h1>Sign-in failed</h1><p>{html.escape(reason)}</p>"
        '<p><a href="/">Back to the console</a></p></main></body></html>'
    )
    return web.Response(status=status, text=body, content_type="text/html", headers=_PAGE_HEADERS)


def _local(path: str | None) -> str:
    """Where to go after signing in: a path of this site only (never another host)."""
    if not path or not path.startswith("/") or path.startswith(("//", "/\\")) or len(path) > 2048:
        return "/"
    return path


async def methods(request: web.Request) -> web.Response:
    """How the console's sign-in page may sign in (public: it is shown before anyone is)."""
    return json_response(Methods(token=True, oidc=SSO in request.app))


async def login(request: web.Request) -> web.StreamResponse:
    sso = request.app.get(SSO)
    if sso is None:
        return _failed(404, "single sign-on is not configured on this service")
    state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    try:
        url = await sso.provider.authorization_url(state, nonce, challenge)
    except SignInRefused as exc:
        return _failed(503, str(exc))
    async with request.app[POOL].acquire() as conn:
        await sessions.begin_login(conn, state, nonce, verifier, _local(request.query.get("return_to")))
    raise web.HTTPFound(url, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


async def callback(request: web.Request) -> web.StreamResponse:
    sso = request.app.get(SSO)
    if sso is None:
        return _failed(404, "single sign-on is not configured on this service")
    q = request.query
    if "error" in q:
        return _failed(401, f"the identity provider refused the sign-in ({q['error'][:200]})")
    code, state = q.get("code", ""), q.get("state", "")
    if not code or not state or len(code) > MAX_PARAM or len(state) > MAX_PARAM:
        return _failed(400, "the identity provider's answer has no code or no state")
    async with request.app[POOL].acquire() as conn:
        begun = await sessions.finish_login(conn, state)
    if begun is None:
        log.warning("sign-in refused: unknown, used or stale state")
        return _failed(400, "this sign-in is unknown, already used or too old: start again")
    nonce, verifier, return_to = begun
    settings = sso.door.settings
    try:
        identity = await sso.provider.sign_in(code, verifier, nonce)
    except SignInRefused as exc:
        log.warning("sign-in refused: %s", exc)
        return _failed(401, str(exc))
    async with request.app[POOL].acquire() as conn:
        cookie = await sessions.open_session(conn, identity, settings.issuer, settings.absolute_timeout_s)
    log.info("signed in through single sign-on: %s, groups %s", identity.subject, list(identity.groups))
    signed_in = web.HTTPFound(return_to, headers={"Cache-Control": "no-store"})
    signed_in.set_cookie(
        sessions.COOKIE,
        cookie,
        path="/",
        httponly=True,
        secure=settings.cookie_secure,
        samesite="Lax",
        max_age=settings.absolute_timeout_s,
    )
    raise signed_in


async def logout(request: web.Request) -> web.Response:
    """Signed out here (the session is ended in the database, so every API process refuses it),
    and the provider's sign-out URL, if it has one, for the console to go to."""
    sso = request.app.get(SSO)
    cookie = request.cookies.get(sessions.COOKIE)
    end_url = None
    if sso is not None and cookie:
        try:  # the API's own check of a session: live, and its CSRF token sent (403 without)
            who = await session_principal(request, sso.door, cookie)
        except ApiError as exc:
            if exc.status != 401:
                raise
        else:  # (an ended session: nothing to end, the cookie goes all the same)
            async with request.app[POOL].acquire() as conn:
                id_token = await sessions.end(conn, who.token_id, who.subject)
            home = urllib.parse.urljoin(sso.door.settings.redirect_url, "/")
            end_url = await sso.provider.end_session_url(id_token, home)
            log.info("signed out: %s", who.subject)
    answer = json_response(SignedOut(True, end_url))
    answer.del_cookie(sessions.COOKIE, path="/")
    return answer
