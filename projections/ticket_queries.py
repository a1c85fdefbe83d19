"""Queries over the tickets read model, with keyset pagination."""

import base64
import binascii
from datetime import datetime
from typing import Any, Literal, NamedTuple
from uuid import UUID

import asyncpg
import msgspec

from domain.events import decode_ticket_event, event_details
from domain.ticket import TicketState, fold
from projections.reports import OPEN_SQL
from projections.ticket_row import TicketFields, ticket_row
from services.eventstore import db

SortField = Literal["created_at", "severity", "ticket_number", "duplicate_count", "sla_due"]
SortOrder = Literal["asc", "desc"]


class TicketView(TicketFields, frozen=True):
    """A ticket as the API returns it (the wire shape of API.md): the fields of its row, and the
    SLA deadlines for its severity under its org's targets (the API fills them in; not stored, so
    a change of targets shows at once)."""

    mtta_due_at: datetime | None = None
    mttr_due_at: datetime | None = None


class DetectionView(msgspec.Struct, frozen=True):
    detection_id: str
    detection_cat: str
    detection_source: str
    detection_priority: int
    sensor_id: str
    hostname: str
    detected_at: datetime
    source_format: str
    linked_at: datetime
    title: str | None = None
    description: str | None = None
    tags: list[str] = []
    entities: dict[str, str] | None = None  # the entity values it carries (what rules may key on)
    grouping: dict[str, Any] | None = None  # why it is on this ticket: rule, key values, window


_json = msgspec.json.Decoder(dict[str, Any] | None)


class TimelineEvent(msgspec.Struct, frozen=True):
    event_id: UUID
    type: str
    by: str | None
    ts: datetime
    metadata: dict[str, Any]


class TicketFilter(msgspec.Struct, frozen=True):
    oids: list[str]
    status: list[str] = []
    severity: list[str] = []
    classification: list[str] = []
    assignee: list[str] = []
    external_ticket_id: list[str] = []
    sensor_id: list[str] = []
    escalation_group: list[str] = []
    tag: list[str] = []
    sla: list[str] = []  # at_risk, breached: open tickets with a running clock in that state (recorded)
    search: str | None = None
    sort: SortField = "created_at"
    order: SortOrder = "desc"
    page_size: int = 50


class InvalidPageToken(ValueError):
    pass


_STORED = TicketFields.__struct_fields__  # the view's columns, first in its order (its deadlines follow)
_TICKET_COLUMNS = ", ".join(_STORED)
_SORT_KEYS: dict[str, tuple[str, ...]] = {
    "created_at": ("created_at", "ticket_number", "ticket_id"),
    "severity": ("severity_rank", "created_at", "ticket_number", "ticket_id"),
    "ticket_number": ("ticket_number", "ticket_id"),
    "duplicate_count": ("duplicate_count", "ticket_number", "ticket_id"),
    # the open tickets with a running clock, by its deadline (sla_due_at, kept by trigger: 0032)
    "sla_due": ("sla_due_at", "ticket_number", "ticket_id"),
}
_token_encoder = msgspec.json.Encoder()


# Filters that are one column's value in a list; ticket_counts keeps the _COUNTED ones (and the org).
_EQUALITY_FILTERS = (
    "status", "severity", "classification", "assignee", "sensor_id", "escalation_group", "external_ticket_id"
)  # fmt: skip
_COUNTED = ("status", "severity")


# The queue's `sla` filter, on what the scheduler recorded of each running clock.
SLA_STATES: dict[str, str] = {
    "at_risk": "(acknowledged_at IS NULL AND mtta_at_risk_at IS NOT NULL AND mtta_breached_at IS NULL"
    " OR resolved_at IS NULL AND mttr_at_risk_at IS NOT NULL AND mttr_breached_at IS NULL)",
    "breached": "(acknowledged_at IS NULL AND mtta_breached_at IS NOT NULL"
    " OR resolved_at IS NULL AND mttr_breached_at IS NOT NULL)",
}


def _where(f: TicketFilter, args: list[Any], org: str | None = None) -> str:
    """The filter as SQL; `org`: the org's condition as the caller states it (a lateral join's)."""

    def param(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    # One org (the common case) as a plain equality: the planner can then walk the ordered
    # (oid, created_at, ...) index and stop at the page size instead of sorting the whole org.
    if org is None:
        org = f"oid = {param(f.oids[0])}" if len(f.oids) == 1 else f"oid = ANY({param(f.oids)}::text[])"
    clauses = [org]
    for column in _EQUALITY_FILTERS:
        values = getattr(f, column)
        if values:
            clauses.append(f"{column} = ANY({param(values)}::text[])")
    if f.tag:
        clauses.append(f"tags_folded @> {param([t.casefold() for t in f.tag])}::text[]")
    if f.sla:
        clauses.append(f"status IN {OPEN_SQL} AND ({' OR '.join(SLA_STATES[s] for s in f.sla)})")
    if f.sort == "sla_due":
        clauses.append("sla_due_at IS NOT NULL")
    if f.search:
        pattern = "%" + f.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        p = param(pattern)
        clauses.append(f"(detection_cat ILIKE {p} OR hostname ILIKE {p})")
    return " AND ".join(clauses)


def encode_page_token(f: TicketFilter, key: tuple[Any, ...]) -> str:
    values = [str(v) if isinstance(v, UUID) else v for v in key]
    raw = _token_encoder.encode([f.sort, f.order, *values])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(f: TicketFilter, token: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = msgspec.json.decode(raw)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        raise InvalidPageToken("page_token is not a token this API issued") from None
    keys = _SORT_KEYS[f.sort]
    if not isinstance(decoded, list) or decoded[:2] != [f.sort, f.order] or len(decoded) != 2 + len(keys):
        raise InvalidPageToken("page_token belongs to another sort or order")
    types: dict[str, type] = {
        "created_at": datetime,
        "ticket_id": UUID,
        "severity_rank": int,
        "ticket_number": int,
        "duplicate_count": int,
        "sla_due_at": datetime,
    }
    try:
        return [msgspec.convert(v, types[k], strict=False) for k, v in zip(keys, decoded[2:], strict=True)]
    except msgspec.ValidationError:
        raise InvalidPageToken("page_token is not a token this API issued") from None


class Page(NamedTuple):
    """One database's share of a list: up to a page and one more of its tickets, in the list's
    order, each with its sort key; and the filter's status counts there."""

    keyed: list[tuple[tuple[Any, ...], TicketView]]
    counts: dict[str, int]


async def list_tickets(
    conn: db.Connection, f: TicketFilter, page_token: str | None
) -> tuple[list[TicketView], str | None, dict[str, int]]:
    return merged_page(f, [await page_of(conn, f, page_token)])


async def page_of(conn: db.Connection, f: TicketFilter, page_token: str | None) -> Page:
    """Several orgs: each org's first page after the token through its own ordered index (a
    lateral join), then the first page of those; a plain `oid = ANY` would sort every ticket of
    the orgs for each page (44 ms against 2.5 ms for 20 orgs of 100,000 tickets, docs/benchmarks.md)."""
    args: list[Any] = []
    orgs = len(f.oids) > 1
    if orgs:
        args.append(f.oids)
    where = _where(f, args, "oid = o.oid" if orgs else None)
    keys = _SORT_KEYS[f.sort]
    direction = "DESC" if f.order == "desc" else "ASC"
    if page_token:
        after = decode_page_token(f, page_token)
        placeholders = []
        for value in after:
            args.append(value)
            placeholders.append(f"${len(args)}")
        op = "<" if f.order == "desc" else ">"
        where += f" AND ({', '.join(keys)}) {op} ({', '.join(placeholders)})"
    order_by = ", ".join(f"{k} {direction}" for k in keys)
    args.append(f.page_size + 1)
    sql = (
        f"SELECT {_TICKET_COLUMNS}, severity_rank, sla_due_at FROM tickets WHERE {where}"
        f" ORDER BY {order_by} LIMIT ${len(args)}"
    )
    if orgs:
        sql = (
            f"SELECT t.* FROM unnest($1::text[]) AS o(oid) CROSS JOIN LATERAL ({sql}) t"
            f" ORDER BY {order_by} LIMIT ${len(args)}"
        )
    rows = await conn.fetch(sql, *args)
    keyed = [(tuple(r[k] for k in keys), _ticket(r)) for r in rows]
    return Page(keyed, await _status_counts(conn, f))


def merged_page(f: TicketFilter, pages: list[Page]) -> tuple[list[TicketView], str | None, dict[str, int]]:
    """The list's page from each database's share (one share: as it is). Every share holds the
    tickets after the token in the list's order, so the first page_size of them all, in that order,
    are the page; the keys are unique (ticket_id last), so the next token skips and repeats nothing."""
    keyed = [k for page in pages for k in page.keyed]
    if len(pages) > 1:
        keyed.sort(key=lambda k: k[0], reverse=f.order == "desc")
    next_token = encode_page_token(f, keyed[f.page_size - 1][0]) if len(keyed) > f.page_size else None
    counts: dict[str, int] = {}
    for page in pages:
        for status, n in page.counts.items():
            counts[status] = counts.get(status, 0) + n
    return [t for _, t in keyed[: f.page_size]], next_token, counts


async def _status_counts(conn: db.Connection, f: TicketFilter) -> dict[str, int]:
    """The status distribution of the filter: from ticket_counts when the filter only names
    dimensions it keeps (no scan of the org's tickets), else counted from the tickets."""
    args: list[Any] = []
    where = _where(f, args)
    uncounted = f.tag or f.search or f.sla or f.sort == "sla_due"  # (this sort lists running clocks only)
    if not (any(getattr(f, c) for c in _EQUALITY_FILTERS if c not in _COUNTED) or uncounted):
        sql = (
            f"SELECT status, sum(n)::bigint AS n FROM ticket_counts WHERE {where}"
            " GROUP BY status HAVING sum(n) > 0"
        )
    else:
        sql = f"SELECT status, count(*) AS n FROM tickets WHERE {where} GROUP BY status"
    return {r["status"]: r["n"] for r in await conn.fetch(sql, *args)}


_TICKET_WIDTH = len(_STORED)


def _ticket(row: asyncpg.Record) -> TicketView:
    """Rows select `_TICKET_COLUMNS` first, in the view's field order."""
    return TicketView(*tuple(row)[:_TICKET_WIDTH])


async def list_detections(conn: db.Connection, ticket_id: UUID) -> list[DetectionView]:
    columns = ", ".join(DetectionView.__struct_fields__)
    rows = await conn.fetch(
        f"SELECT {columns} FROM ticket_detections WHERE ticket_id = $1 ORDER BY position", ticket_id
    )
    return [_detection_view(r) for r in rows]


def _detection_view(r: asyncpg.Record) -> DetectionView:
    row = dict(r)
    for doc in ("entities", "grouping"):  # jsonb arrives as its text
        if row[doc] is not None:
            row[doc] = _json.decode(row[doc])
    return DetectionView(**row)


async def state_of(conn: db.Connection, ticket_id: UUID) -> TicketState | None:
    """The ticket as its events make it, whether it is active or archived (its events moved to
    events_archive, kept until the archive's purge)."""
    rows = await conn.fetch(
        "SELECT type, data::text, coalesce((metadata->>'schema')::int, 1), version FROM events"
        " WHERE stream_id = $1 UNION ALL SELECT type, data::text, coalesce((metadata->>'schema')::int, 1),"
        " version FROM events_archive WHERE stream_id = $1 ORDER BY 4",
        ticket_id,
    )
    return fold([decode_ticket_event(r[1], r[0], r[2]) for r in rows]) if rows else None


async def history(conn: db.Connection, ticket_id: UUID) -> tuple[TicketState | None, list[TimelineEvent]]:
    """The ticket as its events make it, and its audit trail, from one read of the event store: it
    is the record, not a copy of it, so a page shows what the analyst just did even while the read
    tables are a few milliseconds behind, and its version is the one a precondition is checked on."""
    rows = await conn.fetch(
        "SELECT event_id, type, metadata->>'actor' AS by, data::text AS data,"
        " coalesce((metadata->>'schema')::int, 1) AS schema"
        " FROM events WHERE stream_id = $1 ORDER BY version",
        ticket_id,
    )
    decoded = [decode_ticket_event(r["data"], r["type"], r["schema"]) for r in rows]
    out = [
        TimelineEvent(event_id=r["event_id"], type=r["type"], by=r["by"], ts=e.ts, metadata=event_details(e))
        for r, e in zip(rows, decoded, strict=True)
    ]
    return fold(decoded), out


class EntityView(msgspec.Struct, frozen=True):
    entity_id: UUID
    entity_type: str
    entity_value: str
    name: str | None
    verdict: str
    context: str | None
    first_seen: datetime | None
    last_seen: datetime | None
    added_at: datetime
    updated_at: datetime


class TelemetryView(msgspec.Struct, frozen=True):
    telemetry_id: UUID
    atom: str
    sid: str
    event_type: str | None
    event_summary: str | None
    verdict: str | None
    relevance: str | None
    added_at: datetime
    updated_at: datetime
    event: msgspec.Raw | None = None  # the full LimaCharlie event, when one was given (issue 35)


class ArtifactView(msgspec.Struct, frozen=True):
    artifact_id: UUID
    artifact_type: str
    description: str | None
    verdict: str | None
    url: str | None
    path: str | None
    hash: str | None
    added_at: datetime
    name: str | None = None  # an uploaded file's (issue 35): its content at .../artifacts/{id}/content
    size: int | None = None
    media_type: str | None = None
    sha256: str | None = None


class EntityMatch(msgspec.Struct, frozen=True):
    """One ticket holding a searched indicator."""

    ticket_id: UUID
    ticket_number: int
    oid: str
    status: str
    severity: str
    entity: EntityView


async def _rows_of(
    conn: db.Connection, view: Any, table: str, ticket_id: UUID, fields: tuple[str, ...] | None = None
) -> list[Any]:
    columns = ", ".join(fields or view.__struct_fields__)
    rows = await conn.fetch(
        f"SELECT {columns} FROM {table} WHERE ticket_id = $1 ORDER BY added_at", ticket_id
    )
    return [view(**dict(r)) for r in rows]


async def list_entities(conn: db.Connection, ticket_id: UUID) -> list[EntityView]:
    return await _rows_of(conn, EntityView, "ticket_entities", ticket_id)


async def list_telemetry(conn: db.Connection, ticket_id: UUID) -> list[TelemetryView]:
    rows = await _rows_of(conn, dict, "ticket_telemetry", ticket_id, TelemetryView.__struct_fields__)
    return [
        TelemetryView(**{**r, "event": None if r["event"] is None else msgspec.Raw(r["event"].encode())})
        for r in rows
    ]


async def list_artifacts(conn: db.Connection, ticket_id: UUID) -> list[ArtifactView]:
    return await _rows_of(conn, ArtifactView, "ticket_artifacts", ticket_id)


SEARCH_LIMIT = 1000


async def search_entities(
    conn: db.Connection, oids: list[str], entity_type: str | None, value: str, limit: int = SEARCH_LIMIT
) -> list[tuple[datetime, EntityMatch]]:
    """The tickets holding the value, newest first, each with its creation time (the order, for a
    merge of several databases' answers)."""
    columns = ", ".join(f"e.{c}" for c in EntityView.__struct_fields__)
    args: list[Any] = [oids, value]
    # the index holds the value's first 256 characters (migration 0012)
    where = "e.oid = ANY($1::text[]) AND left(e.entity_value, 256) = left($2, 256) AND e.entity_value = $2"
    if entity_type:
        args.append(entity_type)
        where += " AND e.entity_type = $3"
    args.append(limit)
    rows = await conn.fetch(
        f"SELECT t.ticket_id, t.ticket_number, t.oid, t.status, t.severity, t.created_at, {columns}"
        f" FROM ticket_entities e JOIN tickets t ON t.ticket_id = e.ticket_id WHERE {where}"
        f" ORDER BY t.created_at DESC LIMIT ${len(args)}",
        *args,
    )
    return [
        (
            r["created_at"],
            EntityMatch(
                ticket_id=r["ticket_id"],
                ticket_number=r["ticket_number"],
                oid=r["oid"],
                status=r["status"],
                severity=r["severity"],
                entity=EntityView(**{k: r[k] for k in EntityView.__struct_fields__}),
            ),
        )
        for r in rows
    ]


async def assignees(conn: db.Connection, oids: list[str]) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT assignee FROM tickets"
        " WHERE oid = ANY($1::text[]) AND assignee IS NOT NULL ORDER BY 1",
        oids,
    )
    return [r[0] for r in rows]


async def count_tickets(
    conn: db.Connection, oid: str, sensor_id: str | None, status: list[str], severity: list[str]
) -> int:
    f = TicketFilter(oids=[oid], status=status, severity=severity, sensor_id=[sensor_id] if sensor_id else [])
    return sum((await _status_counts(conn, f)).values())


def ticket_view(s: TicketState) -> TicketView:
    """The wire view of a ticket straight from its state: write routes answer with what they wrote,
    not with the read model, which may be a few milliseconds behind. Built from the ticket's row
    (ticket_row), the one computation of a ticket's shape."""
    row = ticket_row(s)
    return TicketView(**{f: getattr(row, f) for f in _STORED})
