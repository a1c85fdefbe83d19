"""Resolving `{number}?oid=` to a ticket, and ticket state to its wire view."""

import uuid

from aiohttp import web

from domain.ticket import TicketState
from projections.ticket_queries import TicketView
from services.api import params
from services.api.context import POOL
from services.api.errors import not_found
from services.handlers import find_ticket_id


def oid_of(request: web.Request) -> str:
    oid = params.text(request.query, "oid", required=True, max_length=256)
    assert oid is not None
    return oid


async def ticket_id_or_404(request: web.Request, number: int | None = None) -> uuid.UUID:
    oid = oid_of(request)
    if number is None:
        number = params.ticket_number(request.match_info["number"])
    async with request.app[POOL].acquire() as conn:
        ticket_id = await find_ticket_id(conn, oid, number)
    if ticket_id is None:
        raise not_found(f"ticket {number} not found")
    return ticket_id


def ticket_view(s: TicketState) -> TicketView:
    """The wire view of a ticket straight from its state: write routes answer with what they wrote,
    not with the read model, which may be a few milliseconds behind."""
    d = s.first_detection
    return TicketView(
        ticket_id=s.ticket_id,
        ticket_number=s.ticket_number,
        oid=s.oid,
        status=s.status,
        severity=s.severity,
        classification=s.classification,
        assignee=s.assignee,
        escalation_group=s.escalation_group,
        investigation_id=s.investigation_id,
        summary=s.summary,
        conclusion=s.conclusion,
        tags=list(s.tags),
        detection_count=s.detection_count,
        detection_id=d.detection_id if d else None,
        detection_cat=d.detection_cat if d else None,
        detection_source=d.detection_source if d else None,
        detection_priority=d.detection_priority if d else None,
        sensor_id=d.sensor_id if d else None,
        hostname=d.hostname if d else None,
        created_at=s.created_at,
        acknowledged_at=s.acknowledged_at,
        resolved_at=s.resolved_at,
        closed_at=s.closed_at,
        merged_into_ticket_id=s.merged_into_ticket_id,
        updated_at=s.updated_at,
    )
