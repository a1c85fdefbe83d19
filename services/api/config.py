"""`GET/PUT /api/v1/config/{oid}`: the org's configuration (org.conf.get / org.conf.set), and how
its outbound deliveries (webhook, ExtraHop) are doing."""

import logging
from typing import Annotated, Any

import msgspec
from aiohttp import web

from domain.config import HttpUrl, OrgConfig, check_http_url
from domain.errors import InvalidValue
from services.api.bodies import json_body
from services.api.context import EGRESS, HANDLER
from services.api.databases import pool_of
from services.api.dispatch import context_of
from services.api.errors import ApiError, invalid
from services.api.responses import json_response
from services.commands.configs import load_configs, update_config
from services.commands.unit_of_work import retrying
from services.delivery import queue, signing
from services.delivery.egress import EgressRefused

log = logging.getLogger(__name__)


async def get_config(request: web.Request) -> web.Response:
    oid = request.match_info["oid"]
    async with pool_of(request).acquire() as conn:
        return json_response((await load_configs(conn, [oid]))[oid])


async def put_config(request: web.Request) -> web.Response:
    """The whole object or any part of it: keys left out keep their current value."""
    oid = request.match_info["oid"]
    patch = await json_body(request, dict[str, Any])
    await check_egress(request, patch)
    ctx, now = context_of(request), request.app[HANDLER].clock()
    try:
        config: OrgConfig = await retrying(
            pool_of(request), lambda conn: update_config(conn, oid, patch, ctx, now)
        )
    except InvalidValue as exc:
        raise invalid(exc.field, str(exc)) from None
    return json_response(config)


async def check_egress(request: web.Request, patch: dict[str, Any]) -> None:
    """The URLs an org points the relay at are resolved now and refused if they reach what is not
    public (the relay checks again when it sends: DNS can change)."""
    extrahop, notifications = patch.get("extrahop"), patch.get("notifications")
    urls = {
        "webhook_url": patch.get("webhook_url"),
        "extrahop.url": extrahop.get("url") if isinstance(extrahop, dict) else None,
    }
    channels = notifications.get("channels") if isinstance(notifications, dict) else None
    for i, c in enumerate(channels if isinstance(channels, list) else []):
        if isinstance(c, dict):  # Slack's and Teams' incoming webhooks are fenced like every other
            urls[f"notifications.channels[{i}].url"] = c.get("url")
    for field, url in urls.items():
        if isinstance(url, str) and _well_formed(url):  # else the configuration's validation says why
            try:
                await request.app[EGRESS].check(url)
            except EgressRefused as exc:
                raise invalid(field, f"{field}: {exc}") from None


def _well_formed(url: str) -> bool:
    try:
        msgspec.convert(url, HttpUrl)
        check_http_url("url", url)
    except (msgspec.ValidationError, InvalidValue):
        return False
    return True


async def get_webhook_status(request: web.Request) -> web.Response:
    return await _status(request, queue.WEBHOOK)


async def get_extrahop_status(request: web.Request) -> web.Response:
    return await _status(request, queue.EXTRAHOP)


async def get_notifications_status(request: web.Request) -> web.Response:
    return await _status(request, queue.NOTIFY)


async def _status(request: web.Request, channel: str) -> web.Response:
    async with pool_of(request).acquire() as conn:
        return json_response(await queue.status(conn, channel, request.match_info["oid"]))


class RevealBody(msgspec.Struct, forbid_unknown_fields=True):
    rotate: bool = False  # a new secret; the current one keeps signing for overlap_hours
    overlap_hours: Annotated[int, msgspec.Meta(ge=0, le=168)] = 24


async def get_signing_secret(request: web.Request) -> web.Response:
    async with pool_of(request).acquire() as conn:
        return json_response(await signing.status(conn, request.match_info["oid"]))


async def reveal_signing_secret(request: web.Request) -> web.Response:
    """The org's webhook signing secret, shown once; `rotate` for a new one."""
    body = await json_body(request, RevealBody)
    oid = request.match_info["oid"]
    try:
        async with pool_of(request).acquire() as conn, conn.transaction():
            revealed = await signing.reveal(conn, oid, body.rotate, body.overlap_hours)
    except signing.AlreadyRevealed as exc:
        raise ApiError(409, str(exc)) from None
    log.info("signing secret of %s shown (%s, rotate=%s)", oid, revealed.fingerprint, body.rotate)
    return json_response(revealed)
