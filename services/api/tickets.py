"""Ticket read routes."""

from typing import Any

import msgspec
from aiohttp import web

from domain.lifecycle import STATUSES
from domain.severity import SEVERITIES
from projections import ticket_queries as q
from services.api import params
from services.api.context import POOL
from services.api.errors import invalid, not_found

CLASSIFICATIONS = ("pending", "true_positive", "false_positive")
_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_encoder.encode(body), content_type="application/json")


def ticket_filter(query: Any) -> q.TicketFilter:
    return q.TicketFilter(
        oids=params.csv(query, "oids", required=True),
        status=params.csv(query, "status", allowed=STATUSES),
        severity=params.csv(query, "severity", allowed=SEVERITIES),
        classification=params.csv(query, "classification", allowed=CLASSIFICATIONS),
        assignee=params.csv(query, "assignee"),
        sensor_id=params.csv(query, "sensor_id"),
        escalation_group=params.csv(query, "escalation_group"),
        tag=params.csv(query, "tag"),
        search=params.text(query, "search", max_length=256),
        sort=params.choice(query, "sort", ("created_at", "severity", "ticket_number"), "created_at"),  # type: ignore[arg-type]
        order=params.choice(query, "order", ("asc", "desc"), "desc"),  # type: ignore[arg-type]
        page_size=params.integer(query, "page_size", default=50, low=1, high=200),
    )


async def list_tickets(request: web.Request) -> web.Response:
    f = ticket_filter(request.query)
    token = params.text(request.query, "page_token", max_length=1024)
    async with request.app[POOL].acquire() as conn:
        try:
            tickets, next_token, counts = await q.list_tickets(conn, f, token)
        except q.InvalidPageToken as exc:
            raise invalid("page_token", str(exc)) from None
    return json_response({"tickets": tickets, "next_page_token": next_token, "total_counts": counts})


async def _ticket_or_404(conn: Any, request: web.Request) -> q.TicketView:
    oid = params.text(request.query, "oid", required=True, max_length=256)
    number = params.ticket_number(request.match_info["number"])
    assert oid is not None
    ticket = await q.get_ticket(conn, oid, number)
    if ticket is None:
        raise not_found(f"ticket {number} not found")
    return ticket


async def get_ticket(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        ticket = await _ticket_or_404(conn, request)
        events = await q.timeline(conn, ticket.ticket_id)
    return json_response({"ticket": ticket, "events": events})


async def list_ticket_detections(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        ticket = await _ticket_or_404(conn, request)
        detections = await q.list_detections(conn, ticket.ticket_id)
    return json_response({"detections": detections})
