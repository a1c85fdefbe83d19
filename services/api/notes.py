"""Notes on a ticket: analysis, remediation, escalation and hand-off records."""

import uuid
from typing import Annotated

import msgspec
from aiohttp import web

from domain.commands import AddNote
from domain.events import NoteAdded
from domain.limits import TEXT_MAX
from domain.notes import NoteType
from services.api.auth import principal
from services.api.bodies import json_body
from services.api.dispatch import on_ticket
from services.api.lookup import config_of
from services.api.responses import json_response
from services.api.schemas import Note


class NoteBody(msgspec.Struct, forbid_unknown_fields=True):
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=TEXT_MAX)]
    note_type: NoteType = "general"


async def add_note(request: web.Request) -> web.Response:
    body = await json_body(request, NoteBody)
    limit = (await config_of(request)).max_notes_per_ticket
    outcome = await on_ticket(
        request, lambda tid: AddNote(tid, uuid.uuid4(), body.content, body.note_type, limit)
    )
    by = principal(request).subject
    [event] = outcome.events
    assert isinstance(event, NoteAdded)
    return json_response(Note(event.note_id, event.content, event.note_type, by, event.ts), status=201)
