"""Linking detections to a ticket by hand, and unlinking them."""

from typing import Any

import msgspec
from aiohttp import web

from domain.commands import UnlinkDetection
from domain.detections import Detection, Id, Priority, Text, parse_detection
from domain.errors import DetectionFormatError
from domain.intake import Arrival
from projections import ticket_queries as q
from services.api.bodies import json_body
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.dispatch import context_of, on_ticket
from services.api.errors import invalid
from services.api.lookup import oid_of, ticket_id_or_404
from services.api.responses import json_response
from services.api.schemas import DetectionLinked, DetectionList, DetectionUnlinked
from services.commands.intake import take_in_one

_encoder = msgspec.json.Encoder()


class FlatDetection(msgspec.Struct):
    """A detection given field by field (the link route and the extension's create_ticket)."""

    detection_id: Id | None = None
    detection_cat: Text = ""
    detection_source: Text = "manual"
    detection_priority: Priority = 0
    sensor_id: Text = ""
    hostname: Text = ""


class LinkDetectionBody(FlatDetection, forbid_unknown_fields=True):
    """Either `{"detection": {full LimaCharlie detection}}` or the flat fields."""

    detection: dict[str, Any] | None = None


def detection_from(detection: dict[str, Any] | None, flat: FlatDetection, oid: str, now: Any) -> Detection:
    """The detection a link or extension request names, refusing one of another org."""
    if detection is not None:
        try:
            parsed = parse_detection(_encoder.encode(detection), key_oid=oid, arrival=now)
        except DetectionFormatError as exc:
            raise invalid("detection", str(exc)) from None
        if parsed.oid != oid:
            raise invalid("detection", f"the detection names org {parsed.oid!r}, the ticket's org is {oid!r}")
        return parsed
    if flat.detection_id is None:
        raise invalid("detection_id", "give detection_id (flat form) or a detection object")
    return Detection(
        detection_id=flat.detection_id,
        oid=oid,
        detection_cat=flat.detection_cat,
        detection_source=flat.detection_source,
        detection_priority=flat.detection_priority,
        sensor_id=flat.sensor_id,
        hostname=flat.hostname,
        detected_at=now,
        source_format="manual",
    )


async def list_detections(request: web.Request) -> web.Response:
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        return json_response(DetectionList(await q.list_detections(conn, ticket_id)))


async def link_detection(request: web.Request) -> web.Response:
    body = await json_body(request, LinkDetectionBody)
    oid = oid_of(request)
    detection = detection_from(body.detection, body, oid, request.app[HANDLER].clock())
    ticket_id = await ticket_id_or_404(request)
    arrival = Arrival(oid, "link", detection, into=ticket_id)
    answer = await take_in_one(pool_of(request), request.app[HANDLER], arrival, context_of(request))
    state = answer.outcome.states[ticket_id]
    linked = answer.fate.kind == "linked" and bool(answer.outcome.events)
    return json_response(
        DetectionLinked(detection, state.detection_count, linked), status=201 if linked else 200
    )


async def unlink_detection(request: web.Request) -> web.Response:
    detection_id = request.match_info["detection_id"]
    if len(detection_id) > 256:
        raise invalid("detection_id", "detection_id is longer than 256 characters")
    outcome = await on_ticket(request, lambda tid: UnlinkDetection(tid, detection_id))
    [state] = outcome.states.values()
    return json_response(DetectionUnlinked(detection_id, True, state.detection_count))
