"""D&R-rule extension requests: `POST /v1/extension/request/ext-ticketing` (form-encoded).

The request data comes as `data=<JSON>` or `gzdata=<base64 of gzip of JSON>`; inside it,
`detection` may be an object or a JSON string holding one. Replies are `{"data": {...}}`.
"""

import base64
import uuid
import zlib
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import web

from domain.intake import Arrival
from domain.lifecycle import STATUSES
from domain.severity import SEVERITIES, Severity
from projections import ticket_queries as q
from services.api.auth import OrgScope, authorize, principal
from services.api.bodies import decode_body, form_body
from services.api.context import HANDLER
from services.api.databases import pool_of
from services.api.detections import FlatDetection, detection_from
from services.api.dispatch import context_of
from services.api.errors import invalid
from services.api.responses import json_response
from services.commands.intake import take_in_one

MAX_DATA_BYTES = 1024 * 1024


class ExtensionForm(msgspec.Struct):
    """The form fields (application/x-www-form-urlencoded); `data` or `gzdata` carries the action's data."""

    oid: str
    action: Literal["create_ticket", "get_ticket_count"]
    data: str | None = None
    gzdata: str | None = None


class CreateTicketData(FlatDetection):
    detection: dict[str, Any] | str | None = None
    severity: Severity | None = None


class CountData(msgspec.Struct):
    sensor_id: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    status: str | list[str] | None = None
    severity: str | list[str] | None = None


def _data(form: Any) -> bytes:
    if form.get("gzdata"):
        try:
            packed = base64.b64decode(str(form["gzdata"]), validate=True)
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            raw = inflater.decompress(packed, MAX_DATA_BYTES)
        except (ValueError, zlib.error):  # binascii.Error is a ValueError; so is a non-ASCII string
            raise invalid("gzdata", "gzdata is not base64 of gzip-compressed JSON") from None
        if inflater.unconsumed_tail:
            raise invalid("gzdata", "the request data is larger than 1 MiB")
        if not inflater.eof:
            raise invalid("gzdata", "gzdata is a cut-off gzip stream")
        return raw
    data = form.get("data")
    return str(data).encode() if data else b"{}"


def _list(value: str | list[str] | None, field: str, allowed: tuple[str, ...]) -> list[str]:
    items = value.split(",") if isinstance(value, str) else (value or [])
    items = [i.strip() for i in items if i.strip()]
    wrong = [i for i in items if i not in allowed]
    if wrong:
        raise invalid(field, f"{field} has unknown values {wrong}")
    return items


async def extension_request(request: web.Request) -> web.Response:
    form = await form_body(request)
    oid = str(form["oid"])
    action = form.get("action")
    raw = _data(form)
    if action == "get_ticket_count":
        data = decode_body(raw, CountData)
        status = _list(data.status, "status", STATUSES)
        severity = _list(data.severity, "severity", SEVERITIES)
        async with pool_of(request).acquire() as conn:
            count = await q.count_tickets(conn, oid, data.sensor_id, status, severity)
        return json_response({"data": {"count": count}})
    if action == "create_ticket":
        authorize(principal(request), "investigation.set", OrgScope.FORM, [oid])
        return json_response({"data": await _create_ticket(request, oid, decode_body(raw, CreateTicketData))})
    raise invalid("action", "action must be create_ticket or get_ticket_count")


async def _create_ticket(request: web.Request, oid: str, data: CreateTicketData) -> dict[str, Any]:
    handler, ctx = request.app[HANDLER], context_of(request)
    detection_obj = data.detection
    if isinstance(detection_obj, str):
        try:
            detection_obj = msgspec.json.decode(detection_obj)
        except (msgspec.DecodeError, RecursionError):
            raise invalid("detection", "detection is a string but not JSON") from None
        if not isinstance(detection_obj, dict):
            raise invalid("detection", "detection must be an object")
    has_fields = bool(data.detection_cat or data.sensor_id or data.hostname)
    detection = None
    if detection_obj is not None or data.detection_id or has_fields:
        flat_id = data.detection_id or (None if detection_obj is not None else f"manual:{uuid.uuid4()}")
        flat = msgspec.structs.replace(data, detection_id=flat_id)
        detection = detection_from(detection_obj, flat, oid, handler.clock())
    arrival = Arrival(
        oid,
        "extension",
        detection,
        new_ticket_id=None if detection else uuid.uuid4(),
        severity=data.severity,
    )
    # the rule fired again for the same detection: the answer is its ticket
    answer = await take_in_one(pool_of(request), handler, arrival, ctx)
    return {
        "ticket_number": answer.ticket_number,
        "ticket_id": answer.ticket_id,
        "created": answer.fate.kind == "opened",
    }
