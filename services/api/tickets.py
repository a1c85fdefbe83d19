"""Ticket routes: the queue, one ticket, PATCH, bulk update, merge, assignees."""

import uuid
from typing import Annotated, Any, get_args

import msgspec
from aiohttp import web

from domain.commands import Classification, TicketChanges, UpdateTicket
from domain.detections import Detection
from domain.errors import DomainError, StaleTicket
from domain.lifecycle import STATUSES
from domain.limits import BULK_UPDATE_MAX, MERGE_SOURCES_MAX
from domain.severity import SEVERITIES
from domain.sla import deadline
from projections import ticket_queries as q
from projections.ticket_queries import ticket_view
from services.api import params
from services.api.bodies import json_body
from services.api.context import HANDLER
from services.api.databases import each_database, pool_of
from services.api.dispatch import context_of, on_ticket
from services.api.errors import ApiError, invalid, not_found, status_for
from services.api.lookup import oid_of, ticket_id_or_404
from services.api.responses import json_response
from services.api.schemas import (
    AssigneeList,
    GroupedDetection,
    MergeResult,
    TicketList,
    TicketOnly,
    TicketWithEvents,
)
from services.api.worktracker import with_external_url
from services.commands.configs import load_configs
from services.commands.handlers import Outcome, execute_one
from services.commands.repository import find_ticket_id
from services.commands.unit_of_work import lock_tickets, retrying
from services.eventstore import db

CLASSIFICATIONS: tuple[str, ...] = get_args(Classification)
SORTS: tuple[str, ...] = get_args(q.SortField)


def ticket_filter(query: Any) -> q.TicketFilter:
    return q.TicketFilter(
        oids=params.csv(query, "oids", required=True),
        status=params.csv(query, "status", allowed=STATUSES),
        severity=params.csv(query, "severity", allowed=SEVERITIES),
        classification=params.csv(query, "classification", allowed=CLASSIFICATIONS),
        assignee=params.csv(query, "assignee"),
        sensor_id=params.csv(query, "sensor_id"),
        escalation_group=params.csv(query, "escalation_group"),
        external_ticket_id=params.csv(query, "external_ticket_id"),
        tag=params.csv(query, "tag"),
        sla=params.csv(query, "sla", allowed=tuple(q.SLA_STATES)),
        search=params.text(query, "search", max_length=256),
        sort=(sort := params.choice(query, "sort", SORTS, "created_at")),  # type: ignore[arg-type]
        # the most urgent clock first unless told otherwise; every other sort, the newest first
        order=params.choice(query, "order", ("asc", "desc"), "asc" if sort == "sla_due" else "desc"),  # type: ignore[arg-type]
        page_size=params.integer(query, "page_size", default=50, low=1, high=200),
    )


async def list_tickets(request: web.Request) -> web.Response:
    """One page of the orgs' tickets: each database's share after the token, merged in order."""
    f = ticket_filter(request.query)
    token = params.text(request.query, "page_token", max_length=1024)

    async def share(conn: db.Connection, oids: list[str]) -> q.Page:
        page = await q.page_of(conn, msgspec.structs.replace(f, oids=oids), token)
        timed = await with_deadlines(conn, [t for _, t in page.keyed])
        return q.Page([(key, t) for (key, _), t in zip(page.keyed, timed, strict=True)], page.counts)

    try:
        pages = await each_database(request, f.oids, share)
    except q.InvalidPageToken as exc:
        raise invalid("page_token", str(exc)) from None
    return json_response(TicketList(*q.merged_page(f, pages)))


async def with_deadlines(conn: Any, tickets: list[q.TicketView]) -> list[q.TicketView]:
    """Each ticket with its MTTA and MTTR deadlines under its org's targets for its severity."""
    configs = await load_configs(conn, {t.oid for t in tickets})
    out = []
    for t in tickets:
        target = configs[t.oid].sla_config[t.severity]  # type: ignore[index]
        mtta, mttr = (deadline(t.created_at, target, kind) for kind in ("mtta", "mttr"))
        out.append(msgspec.structs.replace(t, mtta_due_at=mtta, mttr_due_at=mttr))
    return out


async def get_ticket(request: web.Request) -> web.Response:
    """The ticket and its timeline from the event store (see q.history), and with
    `?expand=evidence` its detections, entities, telemetry and artifacts from the same read. The
    ETag is the ticket's version (its number of events): a PATCH with it as If-Match applies only
    if nobody changed the ticket meanwhile."""
    expand = params.choice(request.query, "expand", ("", "evidence"), "")
    body = await read_ticket(request, evidence=bool(expand))
    response = json_response(body)
    response.headers["ETag"] = f'"{len(body.events)}"'
    return response


async def read_ticket(request: web.Request, *, evidence: bool) -> TicketWithEvents:
    """The request's ticket and timeline, with its evidence if asked, from one read of its events
    (a ticket's page, and its export)."""
    ticket_id = await ticket_id_or_404(request)  # the write side's: readable once its creation answered
    async with pool_of(request).acquire() as conn:
        state, events = await q.history(conn, ticket_id)
        if state is None:  # archived or purged since the lookup
            raise not_found(f"ticket {request.match_info['number']} not found")
        [ticket] = await with_deadlines(conn, [ticket_view(state)])
    if not evidence:
        return TicketWithEvents(ticket, events)
    return TicketWithEvents(
        ticket,
        events,
        detections=with_reasons(list(state.detections.values()), events),
        entities=list(state.entities.values()),
        telemetry=list(state.telemetry.values()),
        artifacts=list(state.artifacts.values()),
    )


def with_reasons(detections: list[Detection], events: list[q.TimelineEvent]) -> list[GroupedDetection]:
    """Each detection with the grouping that put it on the ticket, from the timeline just read."""
    reasons = {
        e.metadata["detection"]["detection_id"]: e.metadata.get("grouping")
        for e in events
        if e.type in ("created", "detection_added") and e.metadata.get("detection")
    }
    return [
        GroupedDetection(**msgspec.structs.asdict(d), grouping=reasons.get(d.detection_id))
        for d in detections
    ]


async def patch_ticket(request: web.Request) -> web.Response:
    changes = await with_external_url(request, oid_of(request), await json_body(request, TicketChanges))
    expected = if_match(request)
    try:
        outcome = await on_ticket(request, lambda tid: UpdateTicket(tid, changes, expected))
    except StaleTicket as exc:
        raise await changed_meanwhile(request, exc) from None
    [state] = outcome.states.values()
    response = json_response(TicketOnly(ticket_view(state)))
    response.headers["ETag"] = f'"{state.version}"'
    return response


def if_match(request: web.Request) -> int | None:
    """The version from `If-Match: "<n>"` (a weak `W/` tag too); none or `*`: no precondition."""
    raw = request.headers.get("If-Match", "").strip()
    if raw in ("", "*"):
        return None
    tag = raw.removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 9:
        raise ApiError(400, 'If-Match takes the ETag of GET tickets/{n}, e.g. "7"', field="If-Match")
    return int(tag)


async def changed_meanwhile(request: web.Request, exc: StaleTicket) -> ApiError:
    """412 naming who changed the ticket since the version the client saw."""
    ticket_id = await ticket_id_or_404(request)
    async with pool_of(request).acquire() as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT metadata->>'actor' FROM events WHERE stream_id = $1 AND version > $2",
            ticket_id,
            exc.expected,
        )
    who = ", ".join(sorted(r[0] or "system" for r in rows)) or "someone"
    return ApiError(412, f"{exc} by {who}: reload it and decide again", headers={"ETag": f'"{exc.actual}"'})


Number = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Oid = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class BulkUpdateBody(msgspec.Struct, forbid_unknown_fields=True):
    oid: Oid
    ticket_numbers: Annotated[list[Number], msgspec.Meta(min_length=1, max_length=BULK_UPDATE_MAX)]
    update: TicketChanges


class BulkResult(msgspec.Struct):
    ticket_number: int
    status: int  # the HTTP status this ticket's update alone would have had
    ticket: q.TicketView | None = None
    error: str | None = None


async def bulk_update(request: web.Request) -> web.Response:
    """Each ticket in its own transaction: one refused transition does not hide the others' outcome."""
    body = await json_body(request, BulkUpdateBody)
    pool, handler, ctx = pool_of(request), request.app[HANDLER], context_of(request)
    results: list[BulkResult] = []
    for number in dict.fromkeys(body.ticket_numbers):
        async with pool.acquire() as conn:
            ticket_id = await find_ticket_id(conn, body.oid, number)
        if ticket_id is None:
            results.append(BulkResult(number, 404, error=f"ticket {number} not found"))
            continue
        try:
            outcome = await execute_one(pool, handler, UpdateTicket(ticket_id, body.update), ctx)
        except DomainError as exc:
            results.append(BulkResult(number, status_for(exc), error=str(exc)))
            continue
        results.append(BulkResult(number, 200, ticket=ticket_view(outcome.states[ticket_id])))
    ok = sum(r.status == 200 for r in results)
    return json_response(BulkUpdateResult(results, ok, len(results) - ok))


class BulkUpdateResult(msgspec.Struct):
    results: list[BulkResult]
    succeeded: int
    failed: int


class MergeBody(msgspec.Struct, forbid_unknown_fields=True):
    oid: Oid
    target_ticket_number: Number
    source_ticket_numbers: Annotated[list[Number], msgspec.Meta(min_length=1, max_length=MERGE_SOURCES_MAX)]


async def merge_tickets(request: web.Request) -> web.Response:
    body = await json_body(request, MergeBody)
    if body.target_ticket_number in body.source_ticket_numbers:
        raise invalid("source_ticket_numbers", "a ticket cannot be merged into itself")
    numbers = [body.target_ticket_number, *body.source_ticket_numbers]
    ids: dict[int, uuid.UUID] = {}
    async with pool_of(request).acquire() as conn:
        for n in numbers:
            found = await find_ticket_id(conn, body.oid, n)
            if found is not None:
                ids[n] = found
    missing = [n for n in numbers if n not in ids]
    if missing:
        raise not_found(f"tickets {missing} not found")
    handler, ctx = request.app[HANDLER], context_of(request)
    target, sources = (
        ids[body.target_ticket_number],
        [ids[n] for n in dict.fromkeys(body.source_ticket_numbers)],
    )

    async def work(conn: Any) -> Outcome:
        await lock_tickets(conn, [target, *sources])
        return await handler.merge(conn, target, sources, ctx)

    outcome = await retrying(pool_of(request), work)
    merged = list(dict.fromkeys(body.source_ticket_numbers))
    return json_response(MergeResult(ticket_view(outcome.states[target]), merged))


class SplitBody(msgspec.Struct, forbid_unknown_fields=True):
    detection_ids: Annotated[
        list[Annotated[str, msgspec.Meta(min_length=1, max_length=256)]],
        msgspec.Meta(min_length=1, max_length=200),
    ]


class SplitResult(msgspec.Struct):
    ticket_number: int  # the new ticket's


async def split_ticket(request: web.Request) -> web.Response:
    """Detections of a ticket move to a new ticket (undoing a wrong grouping or merge); both record
    the split, pointing at each other."""
    body = await json_body(request, SplitBody)
    source = await ticket_id_or_404(request)
    handler, ctx, new_id = request.app[HANDLER], context_of(request), uuid.uuid4()

    async def work(conn: Any) -> Outcome:
        await lock_tickets(conn, [source])
        return await handler.split(conn, source, tuple(body.detection_ids), new_id, ctx)

    outcome = await retrying(pool_of(request), work)
    return json_response(SplitResult(outcome.states[new_id].ticket_number), status=201)


async def list_assignees(request: web.Request) -> web.Response:
    oids = params.csv(request.query, "oids", required=True)
    shares = await each_database(request, oids, q.assignees)
    merged = shares[0] if len(shares) == 1 else sorted({a for share in shares for a in share})
    return json_response(AssigneeList(merged))
