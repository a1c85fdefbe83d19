"""`GET/PUT /api/v1/config/{oid}`: the org's configuration (org.conf.get / org.conf.set), and how
its outbound deliveries (webhook, ExtraHop) are doing."""

from typing import Any

from aiohttp import web

from domain.config import OrgConfig
from domain.errors import InvalidValue
from services.api.bodies import json_body
from services.api.context import HANDLER, POOL
from services.api.dispatch import context_of
from services.api.errors import invalid
from services.api.responses import json_response
from services.commands.configs import load_configs, update_config
from services.commands.handlers import retrying
from services.outbound.deliveries import Channel, status
from services.outbound.extrahop import ExtraHopTracking
from services.outbound.webhooks import Webhooks


async def get_config(request: web.Request) -> web.Response:
    oid = request.match_info["oid"]
    async with request.app[POOL].acquire() as conn:
        return json_response((await load_configs(conn, [oid]))[oid])


async def put_config(request: web.Request) -> web.Response:
    """The whole object or any part of it: keys left out keep their current value."""
    oid = request.match_info["oid"]
    patch = await json_body(request, dict[str, Any])
    ctx, now = context_of(request), request.app[HANDLER].clock()
    try:
        config: OrgConfig = await retrying(
            request.app[POOL], lambda conn: update_config(conn, oid, patch, ctx, now)
        )
    except InvalidValue as exc:
        raise invalid(exc.field, str(exc)) from None
    return json_response(config)


async def get_webhook_status(request: web.Request) -> web.Response:
    return await _status(request, Webhooks())


async def get_extrahop_status(request: web.Request) -> web.Response:
    return await _status(request, ExtraHopTracking())


async def _status(request: web.Request, channel: Channel) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response(await status(conn, channel, request.match_info["oid"]))
