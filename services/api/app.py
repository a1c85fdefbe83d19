"""The aiohttp application factory and its route table."""

from collections.abc import Awaitable, Callable
from typing import NamedTuple

import asyncpg
from aiohttp import web

from services.api import health, tickets
from services.api.context import POOL
from services.api.errors import error_middleware

MAX_BODY_BYTES = 1024 * 1024


class Route(NamedTuple):
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    permission: str | None  # None only for the unauthenticated probes


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", health.healthz, None),
    Route("GET", "/readyz", health.readyz, None),
    Route("GET", "/api/v1/tickets", tickets.list_tickets, "investigation.get"),
    Route("GET", r"/api/v1/tickets/{number}", tickets.get_ticket, "investigation.get"),
    Route("GET", r"/api/v1/tickets/{number}/detections", tickets.list_ticket_detections, "investigation.get"),
)


def create_app(pool: asyncpg.Pool) -> web.Application:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[POOL] = pool
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    return app
