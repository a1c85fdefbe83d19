"""Suppressions: create, list (with what each has held) and end early (investigation.set to
change, investigation.get to list)."""

import uuid
from datetime import datetime

import msgspec
from aiohttp import web

from domain.suppressions import SuppressionRequest
from services.api.bodies import json_body
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.dispatch import context_of
from services.api.errors import invalid
from services.api.lookup import oid_of
from services.api.responses import json_response
from services.commands import suppressions as sup
from services.commands.unit_of_work import retrying
from services.eventstore import db


class SuppressionList(msgspec.Struct):
    suppressions: list[sup.SuppressionRow]


async def create_suppression(request: web.Request) -> web.Response:
    oid = oid_of(request)
    body = await json_body(request, SuppressionRequest)
    handler, ctx, sid = request.app[HANDLER], context_of(request), uuid.uuid4()

    async def work(conn: db.Connection) -> sup.SuppressionRow:
        now = handler.clock()
        await sup.create_suppression(conn, oid, body, sid, ctx, now)
        return await _row(conn, oid, sid, now)

    return json_response(await retrying(pool_of(request), work), status=201)


async def list_suppressions(request: web.Request) -> web.Response:
    oid = oid_of(request)
    async with pool_of(request).acquire() as conn:
        rows = await sup.list_suppressions(conn, oid, request.app[HANDLER].clock())
    return json_response(SuppressionList(rows))


async def end_suppression(request: web.Request) -> web.Response:
    """Ends it at once: the next batch the intake decides no longer sees it."""
    oid = oid_of(request)
    try:
        sid = uuid.UUID(request.match_info["suppression_id"])
    except ValueError:
        raise invalid("suppression_id", "a suppression id is a UUID") from None
    handler, ctx = request.app[HANDLER], context_of(request)

    async def work(conn: db.Connection) -> sup.SuppressionRow:
        now = handler.clock()
        await sup.end_suppression(conn, oid, sid, ctx, now)
        return await _row(conn, oid, sid, now)

    return json_response(await retrying(pool_of(request), work))


async def _row(conn: db.Connection, oid: str, sid: uuid.UUID, now: datetime) -> sup.SuppressionRow:
    [row] = await sup.list_suppressions(conn, oid, now, sid)
    return row
