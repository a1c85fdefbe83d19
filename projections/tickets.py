"""The ticket read tables: tickets, their detections, entities, telemetry and artifacts.

A batch's creations are written first, then consecutive events of one type together (one COPY or
multi-row insert for new tickets and detections, one executemany per other statement), so a batch
of thousands of new tickets and the detections grouped into them costs a handful of round trips.
Rows are keyed by their ids and a row already there is left as it is (`Columnar`), so a rebuild
into empty tables gives the same rows as live projection.
"""

from collections.abc import Callable, Iterable
from itertools import groupby
from typing import Any

import asyncpg

from domain import events as ev
from domain.config import ConfigUpdated
from domain.detections import Detection
from domain.events import AnyEvent, decode_event
from domain.evidence import Artifact, Entity, Telemetry
from domain.severity import SEVERITY_RANK
from services.eventstore.postgres import RecordedEvent

Row = tuple[Any, ...]
Pair = tuple[RecordedEvent, Any]


COPY_MIN_ROWS = 500


class Columnar:
    """An insert of many rows, keyed so that a row already there is left as it is.

    Large runs (a rebuild, a burst of new tickets) are COPYed straight into the table: binary COPY
    encodes rows about three times faster than asyncpg's array parameters, and the table is written
    once. A COPY cannot skip a row that exists, so it runs in a savepoint; if a key is already
    there the savepoint is rolled back and the run goes through a session temp table and an INSERT
    ... ON CONFLICT DO NOTHING. Runs too small to pay for a COPY take that INSERT, reading the same
    columns from unnest() of array parameters. Every path leaves the same rows."""

    def __init__(self, table: str, columns: str, conflict: str) -> None:
        """`columns`: "name type, ..." in row order; `conflict`: the key, as in ON CONFLICT (key)."""
        pairs = [c.split() for c in columns.split(", ")]
        self.table = table
        self.names = [name for name, _ in pairs]
        names = ", ".join(self.names)
        insert = f"INSERT INTO {table} ({names}) SELECT {names} FROM {{source}}"
        insert += f" ON CONFLICT ({conflict}) DO NOTHING"
        self.stage = f"stage_{table}"
        self.create_stage = f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({columns})"
        self.from_stage = f"{insert.format(source=self.stage)}; TRUNCATE {self.stage}"
        arrays = ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(pairs, start=1))
        self.from_arrays = insert.format(source=f"unnest({arrays}) AS s({names})")

    async def run(self, conn: asyncpg.Connection, rows: list[Row]) -> None:
        if len(rows) < COPY_MIN_ROWS:
            await conn.execute(self.from_arrays, *(list(c) for c in zip(*rows, strict=True)))
            return
        try:
            async with conn.transaction():  # a savepoint: the projection's transaction goes on
                await conn.copy_records_to_table(self.table, records=rows, columns=self.names)
        except asyncpg.UniqueViolationError:
            await conn.execute(self.create_stage)
            await conn.copy_records_to_table(self.stage, records=rows, columns=self.names)
            await conn.execute(self.from_stage)


_INSERT_TICKET = Columnar(
    "tickets",
    "ticket_id uuid, oid text, ticket_number int, status text, severity text, severity_rank smallint,"
    " detection_count int, detection_id text, detection_cat text, detection_source text,"
    " detection_priority smallint, sensor_id text, hostname text, created_at timestamptz,"
    " updated_at timestamptz, status_changed_at timestamptz",
    "ticket_id",
)

_INSERT_DETECTION = Columnar(
    "ticket_detections",
    "ticket_id uuid, detection_id text, oid text, detection_cat text, detection_source text,"
    " detection_priority smallint, sensor_id text, hostname text, detected_at timestamptz,"
    " source_format text, linked_at timestamptz, position bigint",
    "ticket_id, detection_id",
)

Statements = list[tuple[str | Columnar, list[Row]]]

_COUNT = """
UPDATE tickets SET detection_count = detection_count + $2, updated_at = greatest(updated_at, $3)
WHERE ticket_id = $1
"""

_UPSERT_ENTITY = """
INSERT INTO ticket_entities (entity_id, ticket_id, oid, entity_type, entity_value, name, verdict, context,
                             first_seen, last_seen, added_at, updated_at)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8, $9, $10, $10 FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (entity_id) DO UPDATE SET name = EXCLUDED.name, verdict = EXCLUDED.verdict,
    context = EXCLUDED.context, first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
    updated_at = EXCLUDED.updated_at
"""

_UPSERT_TELEMETRY = """
INSERT INTO ticket_telemetry (telemetry_id, ticket_id, oid, atom, sid, event_type, event_summary, verdict,
                              relevance, added_at, updated_at)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8, $9, $9 FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (telemetry_id) DO UPDATE SET event_summary = EXCLUDED.event_summary,
    verdict = EXCLUDED.verdict, relevance = EXCLUDED.relevance, updated_at = EXCLUDED.updated_at
"""

_INSERT_ARTIFACT = """
INSERT INTO ticket_artifacts (artifact_id, ticket_id, oid, artifact_type, description, verdict, url, path,
                              hash, added_at)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8, $9 FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (artifact_id) DO NOTHING
"""


def _detection_row(ticket_id: Any, position: int, d: Detection, linked_at: Any) -> Row:
    return (
        ticket_id, d.detection_id, d.oid, d.detection_cat, d.detection_source, d.detection_priority,
        d.sensor_id, d.hostname, d.detected_at, d.source_format, linked_at, position,
    )  # fmt: skip


def _created(run: list[Pair]) -> Statements:
    tickets = []
    for _, e in run:
        d = e.detection
        tickets.append(
            (
                e.ticket_id,
                e.oid,
                e.ticket_number,
                "new",
                e.severity,
                SEVERITY_RANK[e.severity],
                1 if d else 0,
                d.detection_id if d else None,
                d.detection_cat if d else None,
                d.detection_source if d else None,
                d.detection_priority if d else None,
                d.sensor_id if d else None,
                d.hostname if d else None,
                e.ts,
                e.ts,
                e.ts,
            )
        )
    detections = [_detection_row(r.stream_id, r.position, e.detection, e.ts) for r, e in run if e.detection]
    return [(_INSERT_TICKET, tickets), (_INSERT_DETECTION, detections)]


def _counts(changes: Iterable[tuple[Any, int, Any]]) -> tuple[str, list[Row]]:
    """One detection-count update per ticket for a run (a burst grouped into one ticket is one
    UPDATE, not one per detection): (ticket, summed change, latest time)."""
    folded: dict[Any, list[Any]] = {}
    for ticket_id, delta, ts in changes:
        row = folded.get(ticket_id)
        if row is None:
            folded[ticket_id] = [delta, ts]
        else:
            row[0] += delta
            row[1] = max(row[1], ts)
    return _COUNT, [(tid, delta, ts) for tid, (delta, ts) in folded.items()]


def _detection_added(run: list[Pair]) -> Statements:
    return [
        (_INSERT_DETECTION, [_detection_row(r.stream_id, r.position, e.detection, e.ts) for r, e in run]),
        _counts((r.stream_id, 1, e.ts) for r, e in run),
    ]


def _detection_removed(run: list[Pair]) -> Statements:
    return [
        (
            "DELETE FROM ticket_detections WHERE ticket_id = $1 AND detection_id = $2",
            [(r.stream_id, e.detection_id) for r, e in run],
        ),
        _counts((r.stream_id, -1, e.ts) for r, e in run),
    ]


def _merged_from(run: list[Pair]) -> Statements:
    rows = [_detection_row(r.stream_id, r.position, d, e.ts) for r, e in run for d in e.detections]
    return [(_INSERT_DETECTION, rows), _counts((r.stream_id, len(e.detections), e.ts) for r, e in run)]


def _entity(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Entity, ts: Any) -> Row:
        return (x.entity_id, r.stream_id, x.entity_type, x.entity_value, x.name, x.verdict, x.context,
                x.first_seen, x.last_seen, ts)  # fmt: skip

    return [(_UPSERT_ENTITY, [row(r, e.entity, e.ts) for r, e in run]), _touch(run)]


def _telemetry(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Telemetry, ts: Any) -> Row:
        return (x.telemetry_id, r.stream_id, x.atom, x.sid, x.event_type, x.event_summary, x.verdict,
                x.relevance, ts)  # fmt: skip

    return [(_UPSERT_TELEMETRY, [row(r, e.telemetry, e.ts) for r, e in run]), _touch(run)]


def _artifact(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Artifact, ts: Any) -> Row:
        return (
            x.artifact_id,
            r.stream_id,
            x.artifact_type,
            x.description,
            x.verdict,
            x.url,
            x.path,
            x.hash,
            ts,
        )

    return [(_INSERT_ARTIFACT, [row(r, e.artifact, e.ts) for r, e in run]), _touch(run)]


def _delete(table: str, key: str) -> Callable[[list[Pair]], Statements]:
    def writer(run: list[Pair]) -> Statements:
        return [(f"DELETE FROM {table} WHERE {key} = $1", [(getattr(e, key),) for _, e in run]), _touch(run)]

    return writer


def _touch(run: list[Pair]) -> tuple[str, list[Row]]:
    return (
        "UPDATE tickets SET updated_at = greatest(updated_at, $2) WHERE ticket_id = $1",
        [(r.stream_id, e.ts) for r, e in run],
    )


def _set(assignments: str, values: Callable[[Any], Row]) -> Callable[[list[Pair]], Statements]:
    """An UPDATE of ticket columns: $1 ticket id, $2 the event time, $3... the event's values."""

    def writer(run: list[Pair]) -> Statements:
        sql = f"UPDATE tickets SET {assignments}, updated_at = greatest(updated_at, $2) WHERE ticket_id = $1"
        return [(sql, [(r.stream_id, e.ts, *values(e)) for r, e in run])]

    return writer


def _touched(run: list[Pair]) -> Statements:
    """Events that change no column of this model still mark the ticket as recently active."""
    return [_touch(run)]


_WRITERS: dict[type[Any], Callable[[list[Pair]], Statements]] = {
    ev.TicketCreated: _created,
    ev.StatusChanged: _set(
        "status = $3, status_changed_at = $2, escalated = escalated OR $3::text = 'escalated'",
        lambda e: (e.to_status,),
    ),
    ev.SlaBreached: _set(
        "mtta_breached_at = CASE WHEN $3::text = 'mtta' THEN $2 ELSE mtta_breached_at END,"
        " mttr_breached_at = CASE WHEN $3::text = 'mttr' THEN $2 ELSE mttr_breached_at END",
        lambda e: (e.kind,),
    ),
    ev.Acknowledged: _set("acknowledged_at = coalesce(acknowledged_at, $2)", lambda e: ()),
    ev.Resolved: _set("resolved_at = coalesce(resolved_at, $2)", lambda e: ()),
    ev.Closed: _set("closed_at = $2", lambda e: ()),
    ev.Assigned: _set("assignee = $3", lambda e: (e.assignee,)),
    ev.Escalated: _set(
        "escalation_group = $3::text, escalated = escalated OR $3::text IS NOT NULL",
        lambda e: (e.escalation_group,),
    ),
    ev.Classified: _set("classification = $3", lambda e: (e.classification,)),
    ev.InvestigationLinked: _set("investigation_id = $3", lambda e: (e.investigation_id,)),
    ev.SummaryUpdated: _set("summary = $3", lambda e: (e.summary,)),
    ev.ConclusionUpdated: _set("conclusion = $3", lambda e: (e.conclusion,)),
    ev.TagsUpdated: _set(
        "tags = $3, tags_folded = $4", lambda e: (list(e.tags), [t.casefold() for t in e.tags])
    ),
    ev.SeverityUpgraded: _set(
        "severity = $3, severity_rank = $4", lambda e: (e.severity, SEVERITY_RANK[e.severity])
    ),
    ev.MergedInto: _set(
        "status = 'merged', merged_into_ticket_id = $3, status_changed_at = $2",
        lambda e: (e.target_ticket_id,),
    ),
    ev.DetectionAdded: _detection_added,
    ev.DetectionRemoved: _detection_removed,
    ev.MergedFrom: _merged_from,
    ev.EntityAdded: _entity,
    ev.EntityUpdated: _entity,
    ev.EntityRemoved: _delete("ticket_entities", "entity_id"),
    ev.TelemetryAdded: _telemetry,
    ev.TelemetryUpdated: _telemetry,
    ev.TelemetryRemoved: _delete("ticket_telemetry", "telemetry_id"),
    ev.ArtifactAdded: _artifact,
    ev.ArtifactRemoved: _delete("ticket_artifacts", "artifact_id"),
    ConfigUpdated: lambda run: [],  # an org's configuration: not a ticket
}


class TicketsProjection:
    name: str = "projection:tickets"
    tables: tuple[str, ...] = (
        "tickets",
        "ticket_detections",
        "ticket_entities",
        "ticket_telemetry",
        "ticket_artifacts",
        "ticket_counts",  # kept by triggers on tickets; TRUNCATE fires none
    )

    async def apply(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        decoded: list[tuple[RecordedEvent, AnyEvent]] = [(e, decode_event(e.data)) for e in events]
        # A creation is the first event of its stream and writes only rows keyed by its ticket, so
        # the batch's creations can go first; the other events, no longer split up by them, fall
        # into longer runs (the detections grouped into a batch's tickets: one run, not one each).
        created = [pair for pair in decoded if type(pair[1]) is ev.TicketCreated]
        if created:
            decoded = created + [pair for pair in decoded if type(pair[1]) is not ev.TicketCreated]
        for kind, run in groupby(decoded, key=lambda pair: type(pair[1])):
            writer = _WRITERS.get(kind, _touched)
            for sql, rows in writer(list(run)):
                if not rows:
                    continue
                if isinstance(sql, Columnar):
                    await sql.run(conn, rows)
                else:
                    # executemany runs rows in order: two increments of one ticket both land.
                    await conn.executemany(sql, rows)
