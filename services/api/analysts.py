"""Analysts in and out of routing's rotation (`org.conf.set`, or the analyst themself)."""

from datetime import datetime

import msgspec
from aiohttp import web

from domain.routing import Analyst
from services.api.auth import principal
from services.api.bodies import json_body
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.errors import ApiError, invalid
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.commands.routing import set_away


class AwayBody(msgspec.Struct, forbid_unknown_fields=True):
    away_until: datetime | None  # null: back in rotation now


class AnalystStatus(msgspec.Struct):
    oid: str
    analyst: str
    away_until: datetime | None
    in_rotation: bool


async def put_analyst(request: web.Request) -> web.Response:
    """Takes the analyst out of every routing rule of the org until `away_until`."""
    oid = oid_of(request)
    try:
        analyst = msgspec.convert(request.match_info["email"], Analyst)
    except msgspec.ValidationError:
        raise invalid("email", "an analyst is named by an e-mail address") from None
    who = principal(request)
    if who.subject != analyst and not who.has("org.conf.set", oid):
        raise ApiError(403, "only the analyst themself or org.conf.set may change an analyst's rotation")
    body = await json_body(request, AwayBody)
    if body.away_until is not None and body.away_until.tzinfo is None:
        raise invalid("away_until", "away_until needs a time zone (e.g. 2026-12-31T08:00:00Z)")
    now = request.app[HANDLER].clock()
    async with pool_of(request).acquire() as conn, conn.transaction():
        await set_away(conn, oid, analyst, body.away_until, who.subject, now)
    away = body.away_until if body.away_until is not None and body.away_until > now else None
    return json_response(AnalystStatus(oid, analyst, away, away is None))
