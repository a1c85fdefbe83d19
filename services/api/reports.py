"""Dashboard counts and the summary report (investigation.get)."""

from datetime import datetime, timedelta

import msgspec
from aiohttp import web

from projections import reports as r
from services.api import params
from services.api.context import HANDLER, POOL
from services.api.errors import invalid
from services.api.responses import json_response
from services.configs import load_configs

MAX_PERIOD = timedelta(days=3660)


def _time(request: web.Request, name: str, default: datetime) -> datetime:
    raw = params.text(request.query, name, max_length=64)
    if raw is None:
        return default
    try:
        value = msgspec.convert(raw, datetime)
    except msgspec.ValidationError:
        raise invalid(name, f"{name} must be an RFC 3339 timestamp with a time zone") from None
    if value.tzinfo is None:
        raise invalid(name, f"{name} must carry a time zone (e.g. Z)")
    return value


async def dashboard_counts(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        counts = await r.dashboard_counts(conn, configs, request.app[HANDLER].clock())
    return json_response(counts)


async def summary_report(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    now = request.app[HANDLER].clock()
    period_to = _time(request, "to", now)
    period_from = _time(request, "from", period_to - timedelta(days=30))
    if period_from >= period_to:
        raise invalid("from", "from must be earlier than to")
    if period_to - period_from > MAX_PERIOD:
        raise invalid("from", "a report covers at most ten years")
    group_by = request.query.get("group_by") or None
    if group_by is not None and group_by not in r.GROUP_EXPR:
        raise invalid("group_by", f"group_by must be one of {', '.join(r.GROUP_EXPR)}")
    async with request.app[POOL].acquire() as conn:
        configs = await load_configs(conn, oids)
        report = await r.summary(conn, configs, period_from, period_to, group_by, now)  # type: ignore[arg-type]
    return json_response(report)
