"""Notes on a ticket: analysis, remediation, escalation and hand-off records."""

import uuid
from typing import Annotated

import msgspec
from aiohttp import web

from domain.commands import AddNote
from domain.events import NoteAdded
from domain.limits import TEXT_MAX
from domain.notes import NoteType
from services.api import params
from services.api.auth import principal
from services.api.bodies import json_body
from services.api.context import HANDLER, POOL
from services.api.errors import not_found
from services.api.tickets import json_response
from services.handlers import CommandContext, execute_one, find_ticket_id


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX)]
    note_type: NoteType = "general"


async def ticket_id_or_404(request: web.Request) -> uuid.UUID:
    oid = params.text(request.query, "oid", required=True, max_length=256)
    number = params.ticket_number(request.match_info["number"])
    assert oid is not None
    async with request.app[POOL].acquire() as conn:
        ticket_id = await find_ticket_id(conn, oid, number)
    if ticket_id is None:
        raise not_found(f"ticket {number} not found")
    return ticket_id


async def add_note(request: web.Request) -> web.Response:
    body = await json_body(request, NoteBody)
    ticket_id = await ticket_id_or_404(request)
    by = principal(request).subject
    command = AddNote(ticket_id, uuid.uuid4(), body.content, body.note_type)
    outcome = await execute_one(request.app[POOL], request.app[HANDLER], command, CommandContext(actor=by))
    [event] = outcome.events
    assert isinstance(event, NoteAdded)
    note = {
        "note_id": event.note_id,
        "content": event.content,
        "note_type": event.note_type,
        "by": by,
        "ts": event.ts,
    }
    return json_response(note, status=201)
