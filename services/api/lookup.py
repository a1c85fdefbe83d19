"""Resolving `{number}?oid=` to a ticket, and the org's configuration."""

import uuid

from aiohttp import web

from domain.config import OrgConfig
from services.api import params
from services.api.databases import pool_of
from services.api.errors import not_found
from services.commands.configs import load_configs
from services.commands.repository import find_ticket_id


def oid_of(request: web.Request) -> str:
    oid = params.text(request.query, "oid", required=True, max_length=256)
    assert oid is not None
    return oid


async def ticket_id_or_404(request: web.Request, number: int | None = None) -> uuid.UUID:
    oid = oid_of(request)
    if number is None:
        number = params.ticket_number(request.match_info["number"])
    async with pool_of(request).acquire() as conn:
        ticket_id = await find_ticket_id(conn, oid, number)
    if ticket_id is None:
        raise not_found(f"ticket {number} not found")
    return ticket_id


async def config_of(request: web.Request) -> OrgConfig:
    oid = oid_of(request)
    async with pool_of(request).acquire() as conn:
        return (await load_configs(conn, [oid]))[oid]
