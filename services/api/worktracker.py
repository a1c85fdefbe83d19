"""The ticket server an ExtraHop trigger posts to: Jira's create-issue call (`POST /rest/api/issue`,
also at `/rest/api/2/issue`), as the seed's trigger sends it over an HTTP ODS target.

The detection it describes becomes a ticket through the same command path as the Kafka ingest, so
dedup by detection id per org holds across both doors: a trigger that fires again on
DETECTION_UPDATE, or a detection that also came over Kafka, returns the ticket it already has.
The answer is Jira's: `{"id", "key", "self"}`.
"""

import re
import uuid
from typing import Annotated, Any

import msgspec
from aiohttp import web

from domain.commands import TicketChanges, UpdateTicket
from domain.detections import MAX_ID, MAX_TEXT, Detection, extrahop_priority
from domain.limits import nul_at
from domain.severity import severity_for
from services.api.auth import principal
from services.api.bodies import json_body
from services.api.context import HANDLER, POOL
from services.api.dispatch import context_of
from services.api.errors import invalid
from services.api.responses import json_response
from services.commands.configs import load_configs
from services.commands.handlers import (
    NewTicket,
    claimed_detections,
    execute_one,
    open_tickets,
    retrying,
    ticket_id_for_detection,
)

KEY_PREFIX = "SOC"
# "ExtraHop Detection: <id>: <title>", the seed trigger's summary.
_SUMMARY = re.compile(r"^\s*ExtraHop Detection:\s*([^:\s][^:]{0,255}?)\s*:\s*(.*)$", re.DOTALL)
Short = Annotated[str, msgspec.Meta(max_length=MAX_ID)]


class Named(msgspec.Struct):
    name: Short | None = None


class Priority(msgspec.Struct):
    id: Annotated[int, msgspec.Meta(ge=0, le=99)] | Annotated[str, msgspec.Meta(max_length=8)] | None = None


class IssueFields(msgspec.Struct):
    """The fields the seed's trigger fills; anything else a trigger adds is accepted and ignored."""

    summary: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
    description: Annotated[str, msgspec.Meta(max_length=65_536)] | None = None
    assignee: Named | None = None
    reporter: Named | None = None
    priority: Priority | None = None
    labels: Annotated[list[Short], msgspec.Meta(max_length=100)] | None = None
    mitreCategories: Annotated[list[Any], msgspec.Meta(max_length=100)] | None = None
    detection_id: Short | int | None = None


class CreateIssue(msgspec.Struct):
    fields: IssueFields


class IssueCreated(msgspec.Struct, frozen=True):
    id: str
    key: str
    self: str


def detection_id_of(fields: IssueFields) -> str:
    if fields.detection_id is not None and str(fields.detection_id).strip():
        return str(fields.detection_id).strip()
    match = _SUMMARY.match(fields.summary)
    if match is None:
        raise invalid(
            "fields.summary",
            "fields.summary must read 'ExtraHop Detection: <id>: <title>' (or set fields.detection_id)",
        )
    return match[1].strip()


def risk_score(fields: IssueFields) -> int:
    raw = fields.priority.id if fields.priority else None
    if raw is None:
        return 0
    try:
        score = int(raw)
    except ValueError:
        raise invalid("fields.priority.id", "fields.priority.id must be the riskScore, 0-99") from None
    if not 0 <= score <= 99:
        raise invalid("fields.priority.id", "fields.priority.id must be the riskScore, 0-99")
    return score


async def create_issue(request: web.Request) -> web.Response:
    body = await json_body(request, CreateIssue)
    fields = body.fields
    where = nul_at(msgspec.to_builtins(fields))
    if where:
        raise invalid("fields", f"fields{where} holds a NUL character, which cannot be stored")
    who, handler, ctx = principal(request), request.app[HANDLER], context_of(request)
    [oid] = list(who.permissions)
    detection_id = detection_id_of(fields)
    match = _SUMMARY.match(fields.summary)
    detection = Detection(
        detection_id=detection_id,
        oid=oid,
        detection_cat=(fields.labels or ["extrahop"])[0][:MAX_TEXT],
        detection_source="extrahop",
        detection_priority=extrahop_priority(risk_score(fields)),
        sensor_id="",
        hostname="",
        detected_at=handler.clock(),
        source_format="extrahop",
    )
    async with request.app[POOL].acquire() as conn:
        mapping = (await load_configs(conn, [oid]))[oid].severity_mapping
    severity = severity_for(detection.detection_priority, mapping)
    ticket_id = ticket_id_for_detection(oid, detection_id)

    async def work(conn: Any) -> tuple[str, int, bool]:
        owner = (await claimed_detections(conn, [(oid, detection_id)])).get((oid, detection_id))
        if owner is not None:  # fired again for the same detection, or it came over Kafka first
            number = await conn.fetchval("SELECT ticket_number FROM ticket_index WHERE ticket_id = $1", owner)
            return str(owner), int(number), False
        outcome = await open_tickets(conn, handler, [NewTicket(ticket_id, oid, severity, detection, ctx)])
        return str(ticket_id), outcome.states[ticket_id].ticket_number, True

    tid, number, created = await retrying(request.app[POOL], work)
    if created and ((fields.assignee and fields.assignee.name) or match or fields.description):
        await _describe(request, tid, fields, match[2].strip() if match else None)
    self_url = f"{request.url.origin()}/api/v1/tickets/{number}?oid={oid}"
    reply = IssueCreated(id=tid, key=f"{KEY_PREFIX}-{number}", self=self_url)
    return json_response(reply, status=201 if created else 200)


async def _describe(request: web.Request, ticket_id: str, fields: IssueFields, title: str | None) -> None:
    """The assignee and the detection's title and description, as an analyst would set them."""
    changes: dict[str, Any] = {}
    if fields.assignee and fields.assignee.name:
        changes["assignee"] = fields.assignee.name
    if text := "\n\n".join(p for p in (title, fields.description) if p)[:MAX_TEXT]:
        changes["summary"] = text
    command = UpdateTicket(uuid.UUID(ticket_id), TicketChanges(**changes))
    await execute_one(request.app[POOL], request.app[HANDLER], command, context_of(request))
