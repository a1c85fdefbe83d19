"""Liveness, readiness and metrics, for process supervisors, load balancers and Prometheus."""

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.api.auth import Handler
from services.api.context import PROBE_POOL
from services.api.errors import json_error
from services.api.responses import json_response
from services.api.schemas import Health
from services.metrics import REQUEST_SECONDS


async def healthz(_: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready while the database answers. How far each reader of the log is behind is shown, not
    judged: a stuck projector should page someone, not take the API out of its load balancer."""
    try:
        async with request.app[PROBE_POOL].acquire(timeout=2) as conn:
            rows = await conn.fetch(  # behind the head of the shard it is furthest behind in
                "SELECT c.name, max(greatest(h.head - c.position, 0)) FROM subscription_checkpoints c"
                " JOIN log_shard_heads h ON h.shard = c.shard GROUP BY c.name ORDER BY c.name"
            )
    except Exception as exc:  # readiness reports any failure as "not ready"
        return json_error(503, f"database not ready: {type(exc).__name__}")
    return json_response(Health("ready", {r[0]: r[1] for r in rows}))


async def metrics(_: web.Request) -> web.Response:
    """This API process's metrics (its requests, its pools): nothing of any org's data."""
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency by route template, never the raw path: /api/v1/tickets/{number}, not /…/42."""
    started, status = time.perf_counter(), 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        method = request.method if request.method in _METHODS else "other"
        REQUEST_SECONDS.labels(method, route, str(status)).observe(time.perf_counter() - started)
