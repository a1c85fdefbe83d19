"""The write side's own indexes, kept in the transaction of the events they follow from: ticket
numbers, which ticket holds each detection id (and what it last said), and the open groups."""

from collections import Counter
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from domain.errors import DetectionAlreadyLinked
from domain.events import (
    Assigned,
    DetectionAdded,
    DetectionRemoved,
    DetectionUpdated,
    MergedFrom,
    MergedInto,
    SplitFrom,
    SplitTo,
    StatusChanged,
    TicketCreated,
    TicketEvent,
)
from domain.intake import Claim, content_digest
from domain.lifecycle import OPEN
from domain.ticket import TicketState
from services.eventstore import db

ReadAt = tuple[str, int, int] | None


async def allocate_ticket_numbers(conn: db.Connection, counts: Counter[str]) -> dict[str, list[int]]:
    """Reserve consecutive numbers per org, each org's row locked to the caller's commit (numbers
    without gaps). One statement for every org: the rows are locked in the order the sort feeds
    the insert, the same for every writer (no deadlock), and a batch that opens tickets in many
    orgs does not hold the first org's row through a round trip per org."""
    if not counts:
        return {}
    oids = sorted(counts)
    rows = await conn.fetch(
        "INSERT INTO ticket_numbers (oid, last_number)"
        " SELECT u.oid, u.n FROM unnest($1::text[], $2::int[]) AS u(oid, n) ORDER BY u.oid"
        " ON CONFLICT (oid) DO UPDATE SET last_number = ticket_numbers.last_number + EXCLUDED.last_number"
        " RETURNING oid, last_number",
        oids,
        [counts[oid] for oid in oids],
    )
    last: dict[str, int] = {r[0]: r[1] for r in rows}
    return {oid: list(range(last[oid] - counts[oid] + 1, last[oid] + 1)) for oid in oids}


async def claimed_detections(
    conn: db.Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Claim]:
    """(oid, detection id) -> the ticket holding it, for the keys that already belong to one."""
    if not keys:
        return {}
    # One key probe per detection, kept apart by LATERAL ... LIMIT (which the planner cannot
    # flatten into a join). As a plain join it hashed the whole index per batch.
    rows = await conn.fetch(
        "SELECT b.oid, b.detection_id, i.ticket_id, i.content_digest"
        " FROM unnest($1::text[], $2::text[]) AS b(oid, detection_id)"
        " CROSS JOIN LATERAL (SELECT ticket_id, content_digest"
        " FROM detection_index WHERE oid = b.oid AND detection_id = b.detection_id LIMIT 1) AS i",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r[0], r[1]): Claim(r[2], r[3]) for r in rows}


class IndexChanges:
    """Write-side index rows implied by a batch of events, applied before the append."""

    def __init__(self) -> None:
        self.numbers: list[tuple[str, int, UUID]] = []
        # detection -> ticket (its digest, where it was read), must be unclaimed
        self.claims: list[tuple[str, str, UUID, int | None, ReadAt]] = []
        self.releases: list[tuple[str, str, UUID]] = []
        self.moves: list[tuple[str, str, UUID]] = []  # merge: detection now owned by the target
        self.digests: dict[tuple[str, str], int | None] = {}  # an update of a known detection
        self.new_groups: dict[UUID, list[Any]] = {}  # ticket -> grouping_index row of a new ticket
        # ticket -> change of its detection count, its latest detection time (sliding windows)
        self.group_counts: dict[UUID, list[Any]] = {}
        # ticket -> whether it still collects detections, and since when it is resolved (if it is)
        self.group_open: dict[UUID, tuple[bool, Any]] = {}
        self.loads: Counter[tuple[str, str]] = Counter()  # (org, analyst) -> change of open tickets held

    def add(self, event: TicketEvent, state: TicketState, read_at: ReadAt) -> None:
        tid = state.ticket_id
        match event:
            case TicketCreated():
                self.numbers.append((state.oid, state.ticket_number, tid))
                if (d := event.detection) is not None:
                    self.claims.append((state.oid, d.detection_id, tid, content_digest(d), read_at))
                    if event.group_key is not None:
                        at = d.detected_at
                        self.new_groups[tid] = [tid, state.oid, event.group_key, at, 1, True, at, None]
            case DetectionAdded():
                d = event.detection
                self.claims.append((state.oid, d.detection_id, tid, content_digest(d), read_at))
                self._count(tid, 1, d.detected_at)
            case DetectionUpdated():
                self.digests[(state.oid, event.detection.detection_id)] = content_digest(event.detection)
            case DetectionRemoved():
                self.releases.append((state.oid, event.detection_id, tid))
                self._count(tid, -1)
            case SplitTo():
                self.releases.extend((state.oid, did, tid) for did in event.detection_ids)
                self._count(tid, -len(event.detection_ids))
            case SplitFrom():  # released by the original in the same batch (releases go first)
                self.claims.extend(
                    (state.oid, d.detection_id, tid, content_digest(d), None) for d in event.detections
                )
                self._count(tid, len(event.detections))
            case MergedFrom():
                self.moves.extend((state.oid, d.detection_id, tid) for d in event.detections)
                self._count(tid, len(event.detections))
            case StatusChanged() | MergedInto():
                resolved = event.ts if state.status == "resolved" else None
                self._open(tid, state.status in OPEN, resolved)
                was_open, is_open = event.from_status in OPEN, state.status in OPEN
                if state.assignee is not None and was_open != is_open:
                    self.loads[(state.oid, state.assignee)] += 1 if is_open else -1
            case Assigned() if state.status in OPEN:
                if event.old_assignee is not None:
                    self.loads[(state.oid, event.old_assignee)] -= 1
                if event.assignee is not None:
                    self.loads[(state.oid, event.assignee)] += 1

    def _count(self, tid: UUID, delta: int, at: Any = None) -> None:
        row = self.new_groups.get(tid)
        if row is not None:
            row[4] += delta
            row[6] = max(row[6], at) if at is not None else row[6]
            return
        change = self.group_counts.setdefault(tid, [0, None])
        change[0] += delta
        if at is not None:
            change[1] = at if change[1] is None else max(change[1], at)

    def _open(self, tid: UUID, is_open: bool, resolved_at: Any) -> None:
        if tid in self.new_groups:
            self.new_groups[tid][5] = is_open
            self.new_groups[tid][7] = resolved_at
        else:
            self.group_open[tid] = (is_open, resolved_at)

    async def write(self, conn: db.Connection) -> None:
        if self.numbers:
            await conn.executemany(
                "INSERT INTO ticket_index (oid, ticket_number, ticket_id) VALUES ($1, $2, $3)", self.numbers
            )
        if self.releases:
            await conn.executemany(
                "DELETE FROM detection_index WHERE oid = $1 AND detection_id = $2 AND ticket_id = $3",
                self.releases,
            )
        if self.moves:
            await conn.executemany(
                "UPDATE detection_index SET ticket_id = $3 WHERE oid = $1 AND detection_id = $2", self.moves
            )
        if self.new_groups:
            await conn.executemany(
                "INSERT INTO grouping_index (ticket_id, oid, group_key, first_detected_at, detection_count,"
                " open, last_detected_at, resolved_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                [tuple(row) for row in self.new_groups.values()],
            )
        if self.group_counts:
            await conn.executemany(
                "UPDATE grouping_index SET detection_count = detection_count + $2,"
                " last_detected_at = greatest(last_detected_at, $3) WHERE ticket_id = $1",
                [(tid, delta, at) for tid, (delta, at) in self.group_counts.items()],
            )
        if self.group_open:
            await conn.executemany(
                "UPDATE grouping_index SET open = $2, resolved_at = $3 WHERE ticket_id = $1",
                [(tid, is_open, at) for tid, (is_open, at) in self.group_open.items()],
            )
        if self.claims:
            await self._claim(conn)
        if moved := sorted((k, n) for k, n in self.loads.items() if n):
            await conn.executemany(
                "INSERT INTO analyst_loads (oid, analyst, open_tickets) VALUES ($1, $2, $3)"
                " ON CONFLICT (oid, analyst) DO UPDATE SET open_tickets = analyst_loads.open_tickets + $3",
                [(oid, analyst, n) for (oid, analyst), n in moved],
            )
        if self.digests:
            await conn.executemany(
                "UPDATE detection_index SET content_digest = $3 WHERE oid = $1 AND detection_id = $2",
                [(oid, did, digest) for (oid, did), digest in self.digests.items()],
            )

    async def _claim(self, conn: db.Connection) -> None:
        oids, ids, tickets, digests, reads = zip(*self.claims, strict=True)
        inserted = await conn.fetch(
            "INSERT INTO detection_index"
            " (oid, detection_id, ticket_id, content_digest, first_topic, first_partition, first_offset)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[],"
            " $5::text[], $6::int[], $7::bigint[])"
            " ON CONFLICT (oid, detection_id) DO NOTHING RETURNING oid, detection_id",
            list(oids),
            list(ids),
            list(tickets),
            list(digests),
            [r[0] if r else None for r in reads],
            [r[1] if r else None for r in reads],
            [r[2] if r else None for r in reads],
        )
        if len(inserted) != len(self.claims):
            done = {(r[0], r[1]) for r in inserted}
            oid, detection_id, *_ = next(r for r in self.claims if (r[0], r[1]) not in done)
            raise DetectionAlreadyLinked(oid, detection_id)
