"""Turning an authenticated request into a command on a ticket, with the actor from the token."""

import uuid
from collections.abc import Callable

from aiohttp import web

from domain.commands import TicketCommand
from services.api.auth import principal
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.lookup import ticket_id_or_404
from services.commands.envelope import CommandContext
from services.commands.handlers import Outcome, execute_one

MAX_REQUEST_ID = 128


def context_of(request: web.Request) -> CommandContext:
    """`by` is the token's subject; a client's X-Request-ID becomes the correlation id."""
    request_id = request.headers.get("X-Request-ID", "")[:MAX_REQUEST_ID] or str(uuid.uuid4())
    return CommandContext(actor=principal(request).subject, correlation_id=f"http:{request_id}")


async def on_ticket(request: web.Request, build: Callable[[uuid.UUID], TicketCommand]) -> Outcome:
    ticket_id = await ticket_id_or_404(request)
    return await execute_one(pool_of(request), request.app[HANDLER], build(ticket_id), context_of(request))
