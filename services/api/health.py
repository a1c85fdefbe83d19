"""Liveness and readiness, for process supervisors and load balancers."""

from aiohttp import web

from services.api.context import POOL
from services.api.errors import json_error
from services.api.responses import json_response


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1 FROM events LIMIT 1")
    except Exception as exc:  # readiness reports any failure as "not ready"
        return json_error(503, f"database not ready: {type(exc).__name__}")
    return json_response({"status": "ready"})
