"""Liveness and readiness, for process supervisors and load balancers."""

from aiohttp import web

from services.api.context import PROBE_POOL
from services.api.errors import json_error
from services.api.responses import json_response
from services.api.schemas import Health
from services.eventstore.postgres import head_position


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready while the database answers. How far each reader of the log is behind is shown, not
    judged: a stuck projector should page someone, not take the API out of its load balancer."""
    try:
        async with request.app[PROBE_POOL].acquire(timeout=2) as conn:
            head = await head_position(conn)
            rows = await conn.fetch(
                "SELECT name, greatest($1 - position, 0) FROM subscription_checkpoints ORDER BY name", head
            )
    except Exception as exc:  # readiness reports any failure as "not ready"
        return json_error(503, f"database not ready: {type(exc).__name__}")
    return json_response(Health("ready", {r[0]: r[1] for r in rows}))
