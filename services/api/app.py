"""The aiohttp application factory and its route table.

Every route declares the permission it needs and where its org comes from (see auth.py); the
tenant-isolation tests are generated from this table.
"""

import asyncpg
from aiohttp import web

from services.api import health, notes, tickets
from services.api.auth import OrgScope, Route, guard
from services.api.context import HANDLER, POOL
from services.api.errors import error_middleware
from services.api.ratelimit import RateLimiter
from services.handlers import CommandHandler
from services.tokens import TokenService

MAX_BODY_BYTES = 1024 * 1024
GET, SET = "investigation.get", "investigation.set"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, None),
    Route("GET", "/readyz", health.readyz, None),
    Route("GET", "/api/v1/tickets", tickets.list_tickets, GET, OrgScope.ORGS),
    Route("GET", "/api/v1/tickets/{number}", tickets.get_ticket, GET, OrgScope.ORG),
    Route("GET", "/api/v1/tickets/{number}/detections", tickets.list_ticket_detections, GET, OrgScope.ORG),
    Route("POST", "/api/v1/tickets/{number}/notes", notes.add_note, SET, OrgScope.ORG),
)


def create_app(
    pool: asyncpg.Pool,
    handler: CommandHandler,
    tokens: TokenService,
    limiter: RateLimiter,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[POOL] = pool
    app[HANDLER] = handler
    for route in ROUTES:
        app.router.add_route(route.method, route.path, guard(route, tokens, limiter))
    return app
