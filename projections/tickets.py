"""The ticket read tables: tickets, their detections, entities, telemetry and artifacts.

A batch's creations are written first, then consecutive events of one type together (one statement
per run: new tickets and detections as one INSERT ... SELECT, the rest one executemany each; the
severity upgrades that grouping brings run with the detections), so a batch of thousands of new
tickets and the detections grouped into them costs a handful of round trips. Rows are keyed by
their ids and a row already there is left as it is, so a rebuild into empty tables gives the same
rows as live projection.

Ticket and detection rows are read by PostgreSQL from the stored event documents themselves
(`jsonb_to_record`), not decoded here and sent back: in a rebuild that is one statement per table
for every creation in the log, and live it spares the projector most of its work per detection.
The documents' field names come from the domain's structs, so a renamed field fails at import.
"""

import asyncio
from collections.abc import Callable
from itertools import groupby
from typing import Any
from uuid import UUID

import msgspec

from domain import events as ev
from domain.config import ConfigUpdated
from domain.detections import Detection
from domain.events import OrgPurged, OrgResubscribed, decode_event
from domain.evidence import Artifact, Entity, Telemetry
from domain.severity import SEVERITY_RANK
from domain.suppressions import DetectionsSuppressed, SuppressionCreated, SuppressionEnded
from domain.tasks import Task
from projections.reports import OPEN_SQL
from projections.ticket_row import FIRST_DETECTION, first_detection_columns
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent

_json = msgspec.json.Encoder()

Row = tuple[Any, ...]
Pair = tuple[RecordedEvent, Any]


def _document(struct: type[msgspec.Struct], columns: str) -> str:
    """`columns` ("name [type], ...") of a struct's JSON document, checked against the struct's
    fields so that a field renamed in the domain fails here, not as NULLs in a table."""
    missing = [c.split()[0] for c in columns.split(", ") if c.split()[0] not in struct.__struct_fields__]
    if missing:
        raise TypeError(f"{struct.__name__} has no field {missing}")
    return columns


def _tag(struct: type[msgspec.Struct]) -> str:
    tag = struct.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


CREATED = _tag(ev.TicketCreated)
# The documents PostgreSQL reads itself below, and the schema version the SQL was written for: a
# version bumped in domain.schema without the SQL taught to read it fails a test (and must not ship).
SQL_READS: dict[str, int] = {
    CREATED: 1,
    _tag(ev.DetectionAdded): 1,
    _tag(ev.DetectionUpdated): 1,
    _tag(ev.MergedFrom): 1,
}
_DETECTION = _document(
    Detection,
    "detection_id text, oid text, detection_cat text, detection_source text, detection_priority smallint,"
    " sensor_id text, hostname text, detected_at timestamptz, source_format text, title text,"
    " description text, tags text[], entities jsonb",
)
_DETECTION_NAMES = [c.split()[0] for c in _DETECTION.split(", ")]
if len(_DETECTION_NAMES) != len(Detection.__struct_fields__):
    raise TypeError("a field of Detection has no column in ticket_detections")
_CREATION = _document(
    ev.TicketCreated,
    "ticket_id uuid, oid text, ticket_number int, severity text, ts timestamptz, related_ticket_number int",
)
# An event's own detection (creation, addition; JSON null: none), or a merge's detections.
_ONE = f"jsonb_to_record(nullif(e.data->'{_document(ev.DetectionAdded, 'detection')}', 'null'))"
_MANY = f"jsonb_to_recordset(e.data->'{_document(ev.MergedFrom, 'detections')}')"

_INTO_DETECTIONS = (
    f"INSERT INTO ticket_detections (ticket_id, {', '.join(_DETECTION_NAMES)}, grouping, linked_at, position)"
)
# Why a detection is on its ticket: its creation's or addition's `grouping` (none for merged ones).
_GROUPING = f"nullif(e.data->'{_document(ev.DetectionAdded, 'grouping')}', 'null')"
if "grouping" not in ev.TicketCreated.__struct_fields__:
    raise TypeError("TicketCreated has no field ['grouping']")
_COLUMN = {"tags": "coalesce(d.tags, ARRAY[]::text[])"}  # left out of a document that has none
_DETECTION_SELECT = f"""
SELECT e.stream_id, {", ".join(_COLUMN.get(n, f"d.{n}") for n in _DETECTION_NAMES)}, {{grouping}},
       (e.data->>'ts')::timestamptz, e.position
FROM events e CROSS JOIN LATERAL {{source}} AS d({_DETECTION})
WHERE d.detection_id IS NOT NULL AND {{where}}
"""
_DETECTION_ROWS = _INTO_DETECTIONS + _DETECTION_SELECT
_NONE = "NULL::jsonb"

# A ticket's columns of its first detection: only these are parsed (timestamps cost most).
_FIRST = _document(
    Detection,
    "detection_id text, detection_cat text, detection_source text, detection_priority smallint,"
    " sensor_id text, hostname text, title text, tags text[]",
)
# A detection's title and tags are its ticket's summary and tags when it opens one (as in
# domain.ticket.evolve); tags arrive normalised (domain.detections.detection_tags), folded by lower(),
# which is the query's casefold() for the ASCII ids ExtraHop categories and MITRE ids are.
_TICKET_ROWS = f"""
INSERT INTO tickets (ticket_id, oid, ticket_number, status, severity, severity_rank, detection_count,
                     detection_id, detection_cat, detection_source, detection_priority, sensor_id, hostname,
                     summary, tags, tags_folded, created_at, updated_at, status_changed_at,
                     related_ticket_numbers)
SELECT c.ticket_id, c.oid, c.ticket_number, 'new', c.severity, r.rank, (d.detection_id IS NOT NULL)::int,
       d.detection_id, d.detection_cat, d.detection_source, d.detection_priority, d.sensor_id, d.hostname,
       d.title, coalesce(d.tags, ARRAY[]::text[]), ARRAY(SELECT lower(t) FROM unnest(d.tags) t),
       c.ts, c.ts, c.ts, array_remove(ARRAY[c.related_ticket_number], NULL)
FROM events e
CROSS JOIN LATERAL jsonb_to_record(e.data) AS c({_CREATION})
CROSS JOIN LATERAL {_ONE} AS d({_FIRST})
LEFT JOIN unnest($1::text[], $2::smallint[]) AS r(severity, rank) ON r.severity = c.severity
WHERE {{where}}
"""

# The domain's ranks, as parameters; an unknown severity gets none and fails the NOT NULL column
# instead of dropping its ticket.
_RANKS = (list(SEVERITY_RANK), list(SEVERITY_RANK.values()))
# Live, the events of a run by position, in log order: of two rows with one key the first stays.
_AT = "e.position = ANY(${}::bigint[]) ORDER BY e.position"
_KEPT = " ON CONFLICT (ticket_id, detection_id) DO NOTHING"
_INSERT_TICKETS = _TICKET_ROWS.format(where=_AT.format(3)) + " ON CONFLICT (ticket_id) DO NOTHING"
_INSERT_DETECTION = _DETECTION_ROWS.format(source=_ONE, grouping=_GROUPING, where=_AT.format(1)) + _KEPT
_INSERT_MERGED = _DETECTION_ROWS.format(source=_MANY, grouping=_NONE, where=_AT.format(1)) + _KEPT


# The dashboard counts of a bulk load, counted once from the loaded tickets.
_RECOUNT = """
INSERT INTO ticket_counts
SELECT oid, status, severity, acknowledged_at IS NOT NULL, resolved_at IS NOT NULL, count(*)
FROM tickets GROUP BY 1, 2, 3, 4, 5
"""
# The creations' detection rows, parsed from the log beside a rebuild (see `load_created`).
_STAGE = "rebuild_stage_ticket_detections"


async def stage_detections(side: db.Connection, until: int) -> None:
    """The detection rows of every creation up to `until`, into an unlogged table of their own,
    committed on a connection outside the rebuild's transaction: it only reads the log."""
    where = f"e.type = '{CREATED}' AND e.position <= $1"
    await side.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    await side.execute(
        f"CREATE UNLOGGED TABLE {_STAGE} AS"
        f" {_DETECTION_SELECT.format(source=_ONE, grouping=_GROUPING, where=where)}",
        until,
    )


async def load_created(conn: db.Connection, until: int, side: db.Connection | None) -> int:
    """Every creation up to `until`, into empty tables that have no keys yet (a rebuild's first
    pass): one statement per table, nothing to conflict with. Returns the number of creations.

    With a `side` connection, the detection rows are parsed there while this one loads the
    tickets, and then copied in: the rebuild is one statement at a time on one backend, and this
    puts the other core to work (at 1,000,000 creations the parsing insert took 4.0 s, the copy
    from the staged rows 1.5 s, the staging 2.9 s meanwhile). A rebuild that fails leaves the
    staged table behind; the next one replaces it.

    The counts' insert trigger is off for the load (in the rebuild's transaction, which holds the
    table alone): it would keep every loaded row in a transition table to count them, 1.1-1.4 s of
    a 6.6-6.9 s load of 1,000,000 tickets, where one GROUP BY afterwards takes 0.3 s."""
    staged = asyncio.create_task(stage_detections(side, until)) if side is not None else None
    try:
        where = f"e.type = '{CREATED}' AND e.position <= ${{}}"
        await conn.execute("ALTER TABLE tickets DISABLE TRIGGER tickets_counts_insert")
        status = await conn.execute(_TICKET_ROWS.format(where=where.format(3)), *_RANKS, until)
        await conn.execute("ALTER TABLE tickets ENABLE TRIGGER tickets_counts_insert")
        await conn.execute(_RECOUNT)
        if staged is None:
            await conn.execute(
                _DETECTION_ROWS.format(source=_ONE, grouping=_GROUPING, where=where.format(1)), until
            )
        else:
            await staged
            await conn.execute(f"{_INTO_DETECTIONS} SELECT * FROM {_STAGE}")
            await conn.execute(f"DROP TABLE {_STAGE}")
    finally:
        if staged is not None:  # stopped if the load failed before it was done; its outcome collected
            staged.cancel()
            await asyncio.gather(staged, return_exceptions=True)
    return int(status.split()[-1])  # "INSERT 0 n": one ticket per creation


Statements = list[tuple[str, list[Row]]]

# A run's changes to each ticket's row, folded into one update per ticket (`_folded`): its
# detection count, its first linked detection's columns when it was opened without one (as its
# state does), its re-sends and its severity. One set-based statement per run, and per ticket one
# new row version where a batch's detections, re-sends and upgrade of it once cost up to three:
# every update that moves an indexed column (the re-sends' count, the severity) writes an entry in
# each of the table's indexes. The severity is only assigned where the run upgraded it, in a
# statement of its own, so the SLA trigger (fired by `UPDATE OF severity`) runs only for those.
_FOLD = """
UPDATE tickets t SET detection_count = t.detection_count + u.added, updated_at = greatest(t.updated_at, u.ts),
    detection_id = coalesce(t.detection_id, u.detection_id), {first},
    duplicate_count = t.duplicate_count + u.resent, last_seen_at = greatest(t.last_seen_at, u.seen){severity}
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::smallint[],
            $8::text[], $9::text[], $10::int[], $11::timestamptz[]{arrays})
     AS u(ticket_id, added, ts, detection_id, detection_cat, detection_source, detection_priority, sensor_id,
          hostname, resent, seen{names})
WHERE t.ticket_id = u.ticket_id
"""
_FIRST_COLUMNS = ", ".join(
    f"{c} = CASE WHEN t.detection_id IS NULL THEN u.{c} ELSE t.{c} END" for c in FIRST_DETECTION[1:]
)
_FOLD_KEPT = _FOLD.format(first=_FIRST_COLUMNS, severity="", arrays="", names="")
_FOLD_UPGRADED = _FOLD.format(
    first=_FIRST_COLUMNS,
    severity=", severity = u.severity, severity_rank = u.severity_rank",
    arrays=", $12::text[], $13::smallint[]",
    names=", severity, severity_rank",
)


class _Change:
    """One ticket's folded change in a run."""

    __slots__ = ("added", "first", "resent", "seen", "severity", "ts")

    def __init__(self, ts: Any) -> None:
        self.added, self.ts, self.resent = 0, ts, 0
        self.first: Detection | None = None
        self.seen: Any = None
        self.severity: str | None = None


def _folded(run: list[Pair], counted: Callable[[Any], tuple[int, Detection | None]]) -> Statements:
    """The run's changes to ticket rows, one per ticket: `counted` gives an event's change to the
    detection count and the detection it links (a ticket opened without one takes the run's first
    as its own); re-sends add up, the latest time and the last upgrade (severities only go up) win."""
    changes: dict[Any, _Change] = {}
    for r, e in run:
        c = changes.get(r.stream_id)
        if c is None:
            c = changes[r.stream_id] = _Change(e.ts)
        else:
            c.ts = max(c.ts, e.ts)
        if isinstance(e, ev.DuplicatesSeen):
            c.resent += e.count
            c.seen = e.last_seen_at if c.seen is None else max(c.seen, e.last_seen_at)
        elif isinstance(e, ev.SeverityUpgraded):
            c.severity = e.severity
        else:
            delta, first = counted(e)
            c.added += delta
            c.first = c.first or first
    statements: Statements = []
    for upgraded, sql in ((False, _FOLD_KEPT), (True, _FOLD_UPGRADED)):
        picked = [(t, c) for t, c in changes.items() if (c.severity is not None) is upgraded]
        if picked:
            columns: list[list[Any]] = [
                [t for t, _ in picked],
                [c.added for _, c in picked],
                [c.ts for _, c in picked],
            ]
            columns += [
                list(x) for x in zip(*(first_detection_columns(c.first) for _, c in picked), strict=True)
            ]
            columns += [[c.resent for _, c in picked], [c.seen for _, c in picked]]
            if upgraded:
                columns += [[c.severity for _, c in picked], [SEVERITY_RANK[c.severity] for _, c in picked]]  # type: ignore[index]
            statements.append((sql, [tuple(columns)]))
    return statements


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
                              relevance, added_at, updated_at, event)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8, $9, $9, $10::jsonb FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (telemetry_id) DO UPDATE SET event_summary = EXCLUDED.event_summary,
    verdict = EXCLUDED.verdict, relevance = EXCLUDED.relevance, updated_at = EXCLUDED.updated_at
"""

_INSERT_ARTIFACT = """
INSERT INTO ticket_artifacts (artifact_id, ticket_id, oid, artifact_type, description, verdict, url, path,
                              hash, added_at, name, size, media_type, sha256)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (artifact_id) DO NOTHING
"""


def _created(run: list[RecordedEvent]) -> Statements:
    positions = [r.position for r in run]
    return [(_INSERT_TICKETS, [(*_RANKS, positions)]), (_INSERT_DETECTION, [(positions,)])]


def _detection_removed(run: list[Pair]) -> Statements:
    return [
        (
            "DELETE FROM ticket_detections WHERE ticket_id = $1 AND detection_id = $2",
            [(r.stream_id, e.detection_id) for r, e in run],
        ),
        *_folded(run, lambda e: (-1, None)),
    ]


def _merged_from(run: list[Pair]) -> Statements:
    return [
        (_INSERT_MERGED, [([r.position for r, _ in run],)]),
        *_folded(run, lambda e: (len(e.detections), next(iter(e.detections), None))),
    ]


def _split_to(run: list[Pair]) -> Statements:
    return [
        (
            "DELETE FROM ticket_detections WHERE ticket_id = $1 AND detection_id = ANY($2::text[])",
            [(r.stream_id, list(e.detection_ids)) for r, e in run],
        ),
        *_folded(run, lambda e: (-len(e.detection_ids), None)),
        *_related(run),
    ]


def _split_from(run: list[Pair]) -> Statements:
    return [*_merged_from(run), *_related(run)]


_SUPPRESSED = f"""
INSERT INTO suppressed_detections (position, ordinal, suppression_id, oid, detection_id, detection_cat,
                                   detection_source, detected_at)
SELECT e.position, d.n, e.stream_id, e.data->>'oid', d.detection_id, d.detection_cat, d.detection_source,
       d.detected_at
FROM events e
CROSS JOIN LATERAL ROWS FROM (jsonb_to_recordset(e.data->'{_document(DetectionsSuppressed, "detections")}')
     AS (detection_id text, detection_cat text, detection_source text, detected_at timestamptz))
     WITH ORDINALITY AS d(detection_id, detection_cat, detection_source, detected_at, n)
WHERE e.position = ANY($1::bigint[])
ON CONFLICT DO NOTHING
"""


def _suppressed(run: list[Pair]) -> Statements:
    return [(_SUPPRESSED, [([r.position for r, _ in run],)])]


_INSERT_TASK = """
INSERT INTO ticket_tasks (task_id, ticket_id, oid, title, description, mandatory, assignee, added_at,
                          position)
SELECT $1, $2, t.oid, $3, $4, $5, $6, $7, $8 FROM tickets t WHERE t.ticket_id = $2
ON CONFLICT (task_id) DO NOTHING
"""


def _task_added(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Task, ts: Any) -> Row:
        return (x.task_id, r.stream_id, x.title, x.description, x.mandatory, x.assignee, ts, r.position)

    return [(_INSERT_TASK, [row(r, e.task, e.ts) for r, e in run]), _touch(run)]


def _task_set(assignments: str, values: Callable[[Any], Row]) -> Callable[[list[Pair]], Statements]:
    """An UPDATE of a task's columns: $1 its id, $2... the event's values."""

    def writer(run: list[Pair]) -> Statements:
        sql = f"UPDATE ticket_tasks SET {assignments} WHERE task_id = $1"
        return [(sql, [(e.task_id, *values(e)) for _, e in run]), _touch(run)]

    return writer


def _entity(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Entity, ts: Any) -> Row:
        return (x.entity_id, r.stream_id, x.entity_type, x.entity_value, x.name, x.verdict, x.context,
                x.first_seen, x.last_seen, ts)  # fmt: skip

    return [(_UPSERT_ENTITY, [row(r, e.entity, e.ts) for r, e in run]), _touch(run)]


def _telemetry(run: list[Pair]) -> Statements:
    def row(r: RecordedEvent, x: Telemetry, ts: Any) -> Row:
        event = None if x.event is None else _json.encode(x.event).decode()
        return (x.telemetry_id, r.stream_id, x.atom, x.sid, x.event_type, x.event_summary, x.verdict,
                x.relevance, ts, event)  # fmt: skip

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
            x.name,
            x.size,
            x.media_type,
            x.sha256,
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


_related = _set(
    "related_ticket_numbers = related_ticket_numbers || $3::int", lambda e: (e.ticket_number,)
)  # a recurrence, a split


def _touched(run: list[Pair]) -> Statements:
    """Events that change no column of this model still mark the ticket as recently active."""
    return [_touch(run)]


_UPDATE_DETECTION = f"""
UPDATE ticket_detections t SET detection_cat = d.detection_cat, detection_priority = d.detection_priority,
    sensor_id = d.sensor_id, hostname = d.hostname, title = d.title, description = d.description,
    tags = coalesce(d.tags, ARRAY[]::text[])
FROM events e CROSS JOIN LATERAL {_ONE} AS d({_DETECTION})
WHERE e.position = $1 AND t.ticket_id = e.stream_id AND t.detection_id = d.detection_id
"""
# The ticket row's columns of its first detection follow an update of that detection (its
# updated_at moves with every ticket of the run, in _touch).
_UPDATE_FIRST = """
UPDATE tickets SET detection_cat = $3, detection_source = $4, detection_priority = $5, sensor_id = $6,
    hostname = $7
WHERE ticket_id = $1 AND detection_id = $2
"""


def _detection_updated(run: list[Pair]) -> Statements:
    return [
        (_UPDATE_DETECTION, [(r.position,) for r, _ in run]),
        (
            _UPDATE_FIRST,
            [(r.stream_id, *first_detection_columns(e.detection)) for r, e in run],
        ),
        _touch(run),
    ]


def _linked(run: list[Pair]) -> Statements:
    """Detections grouped into tickets, the severity upgrades they bring and the re-sends counted
    on them, as one run. They write different columns (detection rows and counts; severity;
    re-sends), so their order across kinds does not matter, and a batch's intake costs one INSERT
    of detection rows and one update per ticket, instead of one of each for every stretch between
    two upgrades or re-sends."""
    added = [r.position for r, e in run if isinstance(e, ev.DetectionAdded)]
    rows = _folded(run, lambda e: (1, e.detection))
    return [(_INSERT_DETECTION, [(added,)]), *rows] if added else rows


# An org's SLA targets changed: its open tickets' next deadlines again (the trigger's rule, 0032).
_SLA_DUE = f"""
UPDATE tickets
SET sla_due_at = ticketing_sla_due_at(oid, severity, status, created_at, acknowledged_at, resolved_at)
WHERE oid = $1 AND status IN {OPEN_SQL}
"""

_WRITERS: dict[type[Any], Callable[[list[Pair]], Statements]] = {
    ev.StatusChanged: _set(
        "status = $3, status_changed_at = $2, escalated = escalated OR $3::text = 'escalated'",
        lambda e: (e.to_status,),
    ),
    ev.SlaBreached: _set(
        "mtta_breached_at = CASE WHEN $3::text = 'mtta' THEN $2 ELSE mtta_breached_at END,"
        " mttr_breached_at = CASE WHEN $3::text = 'mttr' THEN $2 ELSE mttr_breached_at END",
        lambda e: (e.kind,),
    ),
    ev.SlaAtRisk: _set(
        "mtta_at_risk_at = CASE WHEN $3::text = 'mtta' THEN $2 ELSE mtta_at_risk_at END,"
        " mttr_at_risk_at = CASE WHEN $3::text = 'mttr' THEN $2 ELSE mttr_at_risk_at END",
        lambda e: (e.kind,),
    ),
    ev.EscalationStepTaken: _set("escalation_steps = greatest(escalation_steps, $3)", lambda e: (e.step,)),
    ev.DuplicatesSeen: _linked,
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
    ev.ExternalTicketLinked: _set(
        "external_ticket_id = $3, external_ticket_url = $4",
        lambda e: (e.external_ticket_id, e.external_ticket_url),
    ),
    ev.SummaryUpdated: _set("summary = $3", lambda e: (e.summary,)),
    ev.ConclusionUpdated: _set("conclusion = $3", lambda e: (e.conclusion,)),
    ev.TagsUpdated: _set(
        "tags = $3, tags_folded = $4", lambda e: (list(e.tags), [t.casefold() for t in e.tags])
    ),
    ev.MergedInto: _set(
        "status = 'merged', merged_into_ticket_id = $3, status_changed_at = $2",
        lambda e: (e.target_ticket_id,),
    ),
    ev.DetectionAdded: _linked,
    ev.SeverityUpgraded: _linked,
    ev.DetectionUpdated: _detection_updated,
    ev.DetectionRemoved: _detection_removed,
    ev.MergedFrom: _merged_from,
    ev.SplitFrom: _split_from,  # the detections it took, as a merge's
    ev.SplitTo: _split_to,
    ev.RecurrenceLinked: _related,
    ev.EntityAdded: _entity,
    ev.EntityUpdated: _entity,
    ev.EntityRemoved: _delete("ticket_entities", "entity_id"),
    ev.TelemetryAdded: _telemetry,
    ev.TelemetryUpdated: _telemetry,
    ev.TelemetryRemoved: _delete("ticket_telemetry", "telemetry_id"),
    ev.ArtifactAdded: _artifact,
    ev.ArtifactRemoved: _delete("ticket_artifacts", "artifact_id"),
    ev.TaskAdded: _task_added,
    ev.TaskCompleted: _task_set("done = true, done_at = $2", lambda e: (e.ts,)),
    ev.TaskReopened: _task_set("done = false, done_at = NULL", lambda e: ()),
    ev.TaskAssigned: _task_set("assignee = $2", lambda e: (e.assignee,)),
    ConfigUpdated: lambda run: [(_SLA_DUE, [(e.oid,) for _, e in run])],  # its open tickets' deadlines
    OrgPurged: lambda run: [],  # the org's rows are gone with it
    OrgResubscribed: lambda run: [],  # an org taken in again: no ticket yet
    SuppressionCreated: lambda run: [],  # suppressions are listed from the write side's table
    SuppressionEnded: lambda run: [],
    DetectionsSuppressed: _suppressed,
}


class TicketsProjection:
    name: str = "projection:tickets"
    tables: tuple[str, ...] = (
        "tickets",
        "ticket_detections",
        "ticket_entities",
        "ticket_telemetry",
        "ticket_artifacts",
        "ticket_tasks",
        "ticket_counts",  # kept by triggers on tickets; TRUNCATE fires none
        "suppressed_detections",  # no ticket's: left alone when tickets are archived
    )
    openings: tuple[str, ...] = (CREATED,)
    trigger_tables: tuple[str, ...] = ("ticket_counts",)

    async def apply(self, conn: db.Connection, events: list[RecordedEvent]) -> None:
        # A creation is the first event of its stream and writes only rows keyed by its ticket, so
        # the batch's creations can go first; the other events, no longer split up by them, fall
        # into longer runs (the detections grouped into a batch's tickets: one run, not one each).
        created = [e for e in events if e.type == CREATED]
        statements = _created(created) if created else []
        others = [(e, decode_event(e.data, e.type, e.schema)) for e in events if e.type != CREATED]
        # Consecutive events with one writer are one run (kinds that share a writer share runs).
        for write, run in groupby(others, key=lambda pair: _WRITERS.get(type(pair[1]), _touched)):
            statements += write(list(run))
        for sql, rows in statements:
            if rows:
                # executemany runs rows in order: two increments of one ticket both land.
                await conn.executemany(sql, rows)

    async def load(self, conn: db.Connection, until: int, side: db.Connection | None) -> int:
        return await load_created(conn, until, side)

    async def forget(self, conn: db.Connection, ticket_ids: list[UUID]) -> None:
        for table in self.tables:
            # The counts follow the tickets' rows by trigger; held detections belong to no ticket.
            if table not in self.trigger_tables and table != "suppressed_detections":
                await conn.execute(f"DELETE FROM {table} WHERE ticket_id = ANY($1::uuid[])", ticket_ids)

    async def forget_org(self, conn: db.Connection, oid: str) -> dict[str, int]:
        counts = {}
        for table in self.tables:
            done = await conn.execute(f"DELETE FROM {table} WHERE oid = $1", oid)
            counts[table] = int(done.split()[-1])
        return counts
