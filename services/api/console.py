"""The analysts' console: one page and its two assets, served by the API process.

The page holds no data: it signs in with a token the analyst pastes (kept in session storage) and
then calls the same public API as every other client, so every permission and tenant rule holds in
the console by construction. Only the vocabularies it offers (statuses and their transitions,
severities, classifications, note, entity and verdict types, report groupings) are written into
the page, from the domain itself, so that it never offers what the API would refuse.
"""

import html
import json
from pathlib import Path
from typing import Final, get_args

from aiohttp import web

from domain.commands import Classification
from domain.evidence import ENTITY_TYPES, Verdict
from domain.lifecycle import STATUSES, TRANSITIONS
from domain.notes import NOTE_TYPES
from domain.severity import SEVERITIES
from projections.reports import GROUP_EXPR
from projections.ticket_queries import SortField
from services.api.auth import principal
from services.api.databases import PLACEMENT, each_database, merged
from services.api.responses import json_response
from services.api.schemas import WhoAmI
from services.auth.tokens import PERMISSIONS, WILDCARD_ORG
from services.commands.configs import load_configs
from services.eventstore import db
from services.eventstore.placement import at_once, on_pool

ASSETS: Final = Path(__file__).parent / "console"
_TYPES: Final = {"console.js": "text/javascript", "console.css": "text/css"}
# The page's own assets only: no inline script runs, nothing loads from anywhere else.
_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:;"
    " form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _vocabulary() -> str:
    words = {
        "statuses": STATUSES,
        "transitions": TRANSITIONS,
        "severities": SEVERITIES,
        "classifications": get_args(Classification),
        "note_types": NOTE_TYPES,
        "entity_types": ENTITY_TYPES,
        "verdicts": get_args(Verdict),
        "group_by": list(GROUP_EXPR),
        "sorts": get_args(SortField),
        "permissions": PERMISSIONS,
    }
    return html.escape(json.dumps(words), quote=False)


_PAGE: Final = (ASSETS / "index.html").read_text().replace("{{vocabulary}}", _vocabulary())


async def page(_: web.Request) -> web.Response:
    """Every console URL (`/`, `/tickets/{n}?oid=…`, `/dashboard`, `/reports`, `/entities`, `/admin`)
    answers this page; it reads the URL and asks the API for what to show."""
    return web.Response(
        text=_PAGE,
        content_type="text/html",
        headers={"Content-Security-Policy": _POLICY, "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"},
    )  # fmt: skip


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _TYPES:
        raise web.HTTPNotFound()
    return web.Response(
        body=(ASSETS / name).read_bytes(),
        content_type=_TYPES[name],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


async def _named_orgs(conn: db.Connection) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT oid, config->>'org_name' FROM org_configs WHERE config->>'org_name' IS NOT NULL"
        " ORDER BY oid LIMIT 10000"
    )
    return [(r[0], r[1]) for r in rows]


async def whoami(request: web.Request) -> web.Response:
    who = principal(request)
    orgs = {oid: sorted(perms) for oid, perms in sorted(who.permissions.items())}
    if who.operator and WILDCARD_ORG in who.permissions:  # every org: those that have a name
        every = await at_once(on_pool(pool, _named_orgs) for pool in request.app[PLACEMENT].pools)
        names = dict(merged(every, lambda named: named[0])[:10000])
    else:

        async def named(conn: db.Connection, there: list[str]) -> dict[str, str]:
            return {o: c.org_name for o, c in (await load_configs(conn, there)).items() if c.org_name}

        parts = await each_database(request, [o for o in orgs if o != WILDCARD_ORG], named)
        names = {o: name for part in parts for o, name in part.items()}
    return json_response(
        WhoAmI(who.subject, who.operator, who.api_key, orgs, names, who.source, who.csrf_token or None)
    )
