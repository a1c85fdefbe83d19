"""The ticket server an ExtraHop trigger posts to: Jira's create-issue call (`POST /rest/api/issue`,
also at `/rest/api/2/issue`), as the seed's trigger sends it over an HTTP ODS target.

The detection it describes becomes a ticket through the same command path as the Kafka ingest, so
dedup by detection id per org holds across both doors: a trigger that fires again on
DETECTION_UPDATE, or a detection that also came over Kafka, returns the ticket it already has.
The answer is Jira's: `{"id", "key", "self"}`.
"""

import re
import urllib.parse
import uuid
from typing import Annotated, Any

import msgspec
from aiohttp import web
from msgspec import UNSET

from domain.commands import TicketChanges, UpdateTicket
from domain.detection_tracking import RESOLUTION
from domain.detections import MAX_ID, MAX_TEXT, Detection, detection_tags, extrahop_priority
from domain.intake import Arrival
from domain.limits import TEXT_MAX, nul_at
from domain.ticket_links import render_ticket_url
from services.api.auth import principal
from services.api.bodies import json_body
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.dispatch import context_of
from services.api.errors import ApiError, invalid
from services.api.responses import json_response
from services.commands.configs import load_configs
from services.commands.handlers import execute_one
from services.commands.indexes import claimed_detections
from services.commands.intake import take_in_one

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


def detection_and_title(fields: IssueFields) -> tuple[str, str]:
    """The detection id (`fields.detection_id`, else read from the trigger's summary) and the title."""
    match = _SUMMARY.match(fields.summary)
    title = (match[2] if match else fields.summary).strip()
    if fields.detection_id is not None and str(fields.detection_id).strip():
        return str(fields.detection_id).strip(), title
    if match is None:
        raise invalid(
            "fields.summary",
            "fields.summary must read 'ExtraHop Detection: <id>: <title>' (or set fields.detection_id)",
        )
    return match[1].strip(), title


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
    detection_id, title = detection_and_title(fields)
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
        title=title[:MAX_TEXT] or None,
        description=(fields.description or "").strip()[:TEXT_MAX] or None,
        tags=issue_tags(fields),
    )
    # fired again for the same detection, or it came over Kafka first: the ticket it has, updated
    # with what changed
    answer = await take_in_one(pool_of(request), handler, issue_arrival(oid, detection, fields), ctx)
    number = answer.ticket_number
    self_url = f"{request.url.origin()}/api/v1/tickets/{number}?oid={urllib.parse.quote(oid, safe='')}"
    reply = IssueCreated(
        id=str(answer.ticket_id), key=f"{answer.config.ticket_key_prefix}-{number}", self=self_url
    )
    return json_response(reply, status=201 if answer.fate.kind == "opened" else 200)


def issue_tags(fields: IssueFields) -> tuple[str, ...]:
    """The detection's categories (`labels`) and MITRE ATT&CK ids (`mitreCategories`, strings or
    ExtraHop's objects with an `id`), as tags an analyst can filter the queue by."""
    mitre = [m.get("id") or m.get("name") if isinstance(m, dict) else m for m in fields.mitreCategories or []]
    return detection_tags([*(fields.labels or []), *mitre])


def issue_arrival(oid: str, detection: Detection, fields: IssueFields) -> Arrival:
    """What a Jira issue carries besides its detection, as an analyst would record it on the ticket
    it opens: the assignee, and the description with its reporter as a note. The title and the
    tags travel in the detection (the ticket's summary and tags when it opens one)."""
    reporter = fields.reporter.name if fields.reporter and fields.reporter.name else None
    lines = [f"Reported by {reporter}." if reporter else "", fields.description or ""]
    note = "\n\n".join(line for line in lines if line)[:TEXT_MAX] or None
    return Arrival(
        oid,
        "issue",
        detection,
        assignee=fields.assignee.name if fields.assignee and fields.assignee.name else None,
        note=note,
        note_id=uuid.uuid4() if note else None,
    )


async def with_external_url(request: web.Request, oid: str, changes: TicketChanges) -> TicketChanges:
    """An external ticket id set without a URL gets the org's template rendered (ExtraHop's
    `$ticket_id`), so the link is recorded, and shown, with it."""
    if changes.external_ticket_id in (UNSET, None) or changes.external_ticket_url is not UNSET:
        return changes
    async with pool_of(request).acquire() as conn:
        template = (await load_configs(conn, [oid]))[oid].external_ticket_url_template
    if template is None:
        return changes
    url = render_ticket_url(template, str(changes.external_ticket_id), oid)
    return msgspec.structs.replace(changes, external_ticket_url=url)


# The ExtraHop seed's ticket statuses (and the vocabulary its REST API takes), as our lifecycle.
EXTRAHOP_STATUS: dict[str, str] = {
    "new": "new",
    "acknowledged": "acknowledged",
    "in_progress": "in_progress",
    "closed": "closed",
    "closed_with_action_taken": "closed",
    "closed_with_no_action_taken": "closed",
}
RESOLUTION_CLASSIFICATION = {resolution: c for c, resolution in RESOLUTION.items()}


class DetectionUpdate(msgspec.Struct):
    """The seed script's body for `PATCH /api/v1/detections/{id}`: any field may be null or absent
    (null leaves it as it is)."""

    ticket_id: Short | None = None
    status: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    assignee: Short | None = None
    resolution: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class DetectionTracked(msgspec.Struct, frozen=True):
    detection_id: str
    ticket_id: str
    ticket_number: int
    status: str
    assignee: str | None
    classification: str
    external_ticket_id: str | None
    external_ticket_url: str | None


def _word(value: str) -> str:
    return re.sub(r"[\s-]+", "_", value.strip().lower())


def changes_for(update: DetectionUpdate) -> TicketChanges:
    """The whole update as one set of ticket changes: all of it applies, or none (a 409 names
    the two states of an impossible move)."""
    changes: dict[str, Any] = {}
    if update.ticket_id is not None:
        changes["external_ticket_id"] = update.ticket_id
    if update.assignee is not None:
        changes["assignee"] = update.assignee
    status = _word(update.status) if update.status is not None else None
    resolution = _word(update.resolution) if update.resolution is not None else None
    if status is not None:
        if status not in EXTRAHOP_STATUS:
            raise invalid(
                "status", f"status must be one of {', '.join(EXTRAHOP_STATUS)} (got {update.status!r})"
            )
        changes["status"] = EXTRAHOP_STATUS[status]
        if status.startswith("closed_with_") and resolution is None:
            resolution = status.removeprefix("closed_with_")
    if resolution is not None:
        if resolution not in RESOLUTION_CLASSIFICATION:
            raise invalid("resolution", "resolution must be action_taken or no_action_taken")
        changes["classification"] = RESOLUTION_CLASSIFICATION[resolution]
    return TicketChanges(**changes)


async def update_detection(request: web.Request) -> web.Response:
    """`PATCH /api/v1/detections/{detection_id}` as the seed's script sends it to ExtraHop, here
    updating the ticket that holds the detection: its external ticket, assignee and lifecycle."""
    who = principal(request)
    [oid] = list(who.permissions)
    detection_id = request.match_info["detection_id"]
    where = nul_at(detection_id)
    if where is not None or len(detection_id) > MAX_ID:
        raise invalid("detection_id", "detection_id is not a detection id")
    update = await json_body(request, DetectionUpdate)
    if nul_at(msgspec.to_builtins(update)):
        raise invalid("body", "the body holds a NUL character, which cannot be stored")
    changes = await with_external_url(request, oid, changes_for(update))
    async with pool_of(request).acquire() as conn:
        claim = (await claimed_detections(conn, [(oid, detection_id)])).get((oid, detection_id))
    if claim is None:
        raise ApiError(404, f"no ticket holds detection {detection_id}")
    owner = claim.ticket_id
    outcome = await execute_one(
        pool_of(request), request.app[HANDLER], UpdateTicket(owner, changes), context_of(request)
    )
    state = outcome.states[owner]
    return json_response(
        DetectionTracked(
            detection_id=detection_id,
            ticket_id=str(owner),
            ticket_number=state.ticket_number,
            status=state.status,
            assignee=state.assignee,
            classification=state.classification,
            external_ticket_id=state.external_ticket_id,
            external_ticket_url=state.external_ticket_url,
        )
    )
