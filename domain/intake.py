"""The one intake: what becomes of each detection that arrives, through any door.

A detection arrives over Kafka, through the extension's `create_ticket`, through the create-issue
door an ExtraHop trigger posts to, or linked to a ticket by hand. Whatever the door, the same plan
decides its fate from the facts read for the batch: open a ticket, join an open group, link it to
the ticket named, count a re-send, apply an update of a known detection, or drop or refuse it (its
org was unsubscribed; it is linked elsewhere). Severity, ticket ids and grouping are decided here
and nowhere else; the caller only reads the facts, numbers the new tickets and appends.
"""

import hashlib
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import msgspec

from domain.commands import (
    AddNote,
    CountDuplicates,
    LinkDetection,
    OpenTicket,
    RefreshDetection,
    TicketChanges,
    TicketCommand,
    UpdateTicket,
)
from domain.config import OrgConfig
from domain.detections import CONTENT_FIELDS, Detection
from domain.grouping import GroupCandidate, choose, full, group_key
from domain.severity import Severity, severity_for

# Tickets born from a detection get an id derived from (org, detection id): a replay, a second
# worker or another door computes the same id, which keeps every effect idempotent.
TICKET_NAMESPACE = UUID("5b0c4b7e-4d1a-4f53-9a43-2f1e7c3b9d10")

Door = Literal["kafka", "extension", "issue", "link"]
FateKind = Literal[
    "opened",  # a new ticket holds it
    "joined",  # grouped into an open ticket
    "linked",  # linked to the ticket the caller named
    "counted",  # a re-send of a known detection, counted on its ticket
    "redelivered",  # a message read before (a crash, a replay): nothing to do
    "updated",  # a known detection with new content: its ticket is updated
    "unchanged",  # a known detection sent again through an API door, as it was
    "dropped",  # not taken in, and not an error (data of an org from before its purge)
    "refused",  # not taken in: `refusal` says why
]
Refusal = Literal["unsubscribed", "linked_elsewhere"]


def ticket_id_for_detection(oid: str, detection_id: str, taken: frozenset[UUID] = frozenset()) -> UUID:
    """The ticket a detection opens. A detection unlinked from the ticket it opened and sent again
    opens another; `taken` names the ids in use, and the next of the detection's ids is chosen."""
    ticket_id = uuid.uuid5(TICKET_NAMESPACE, f"{oid}\x1f{detection_id}")
    again = 0
    while ticket_id in taken:
        again += 1
        ticket_id = uuid.uuid5(TICKET_NAMESPACE, f"{oid}\x1f{detection_id}\x1f{again}")
    return ticket_id


def content_digest(detection: Detection) -> int | None:
    """What a detection says of itself, as a number the write side keeps with its claim, so that an
    update is told from a re-send without reading the ticket. Only ExtraHop detections are updated
    in place (the trigger fires on every change made on the appliance); None for the others."""
    if detection.source_format != "extrahop":
        return None
    fields = msgspec.structs.astuple(detection)
    content = _digest_encoder.encode([fields[i] for i in _CONTENT_AT])
    return int.from_bytes(hashlib.blake2b(content, digest_size=8).digest(), "big", signed=True)


_CONTENT_AT = [Detection.__struct_fields__.index(f) for f in CONTENT_FIELDS]
_digest_encoder = msgspec.json.Encoder()


class Arrival(msgspec.Struct, frozen=True):
    """One detection at one door, with what that door adds to it."""

    oid: str
    door: Door
    detection: Detection | None = None  # None: a ticket without a detection (create_ticket)
    position: tuple[str, int, int] | None = None  # Kafka: where it was read (topic, partition, offset)
    into: UUID | None = None  # the link door: the ticket it is linked to
    new_ticket_id: UUID | None = None  # a ticket without a detection: its id (the domain draws none)
    severity: Severity | None = None  # the caller's own severity, else the org's mapping decides
    assignee: str | None = None  # given to the ticket it opens (the create-issue door)
    note: str | None = None  # added to the ticket it opens, as `note_id`
    note_id: UUID | None = None


class Tombstone(msgspec.Struct, frozen=True):
    purged_at: datetime
    resubscribed_at: datetime | None = None


class Claim(msgspec.Struct, frozen=True):
    """The ticket holding a detection id, and the digest of the content it was last given (or,
    for one claimed within the batch, that content itself: its digest is needed only if the
    detection comes again in the same batch)."""

    ticket_id: UUID
    digest: int | None = None
    content: Detection | None = None

    def current_digest(self) -> int | None:
        return content_digest(self.content) if self.content is not None else self.digest


class Facts(msgspec.Struct):
    """What the intake reads for a batch, inside its write transaction."""

    configs: dict[str, OrgConfig]
    tombstones: dict[str, Tombstone] = {}
    claims: dict[tuple[str, str], Claim] = {}
    candidates: dict[tuple[str, str], list[GroupCandidate]] = {}  # (oid, group key) -> open tickets
    read_offsets: dict[tuple[str, int], int] = {}  # how far each partition had been read
    taken: frozenset[UUID] = frozenset()  # ticket ids in use by tickets that no longer hold their detection


@dataclass(frozen=True, slots=True)
class Fate:
    kind: FateKind
    ticket_id: UUID | None = None
    refusal: Refusal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Opening:
    """A ticket to open; numbered by the caller (numbers need the database)."""

    at: int  # the arrival's index
    ticket_id: UUID
    oid: str
    severity: Severity
    detection: Detection | None
    group_key: str | None
    continues_ticket_id: UUID | None


@dataclass
class Plan:
    fates: list[Fate] = field(default_factory=list)
    openings: list[Opening] = field(default_factory=list)
    commands: list[tuple[int, TicketCommand]] = field(default_factory=list)  # (arrival index, command)
    recount: dict[UUID, int] = field(default_factory=dict)  # ticket -> re-sends counted


def group_keys(arrivals: Sequence[Arrival], configs: dict[str, OrgConfig]) -> list[str | None]:
    """Each arrival's grouping key, or None where it cannot join a group (its org does not group,
    it has no detection, or it is linked to a ticket by hand)."""
    return [
        group_key(a.detection, configs[a.oid])
        if a.detection is not None and a.door != "link" and configs[a.oid].auto_grouping_enabled
        else None
        for a in arrivals
    ]


def grouping_window(configs: dict[str, OrgConfig], oids: Sequence[str]) -> timedelta:
    return timedelta(minutes=max(configs[oid].grouping_window_minutes for oid in oids))


def plan(arrivals: Sequence[Arrival], keys: Sequence[str | None], facts: Facts) -> Plan:
    """Each arrival's fate, in arrival order: earlier arrivals of the batch are facts for later ones."""
    out = Plan()
    claims = dict(facts.claims)
    groups = {k: [msgspec.structs.replace(c) for c in v] for k, v in facts.candidates.items()}
    seen: set[tuple[str, int, int]] = set()
    for at, (a, key) in enumerate(zip(arrivals, keys, strict=True)):
        stone = facts.tombstones.get(a.oid)
        if stone is not None:
            if stone.resubscribed_at is None:
                reason = f"org {a.oid!r} was unsubscribed at {stone.purged_at.isoformat()}"
                out.fates.append(Fate("refused", refusal="unsubscribed", reason=reason))
                continue
            if a.detection is not None and a.detection.detected_at < stone.purged_at:
                reason = "detected before its org was purged; only new data flows after re-subscribing"
                out.fates.append(Fate("dropped", reason=reason))
                continue
        config = facts.configs[a.oid]
        d = a.detection
        if d is None:
            assert a.new_ticket_id is not None, "a ticket without a detection needs its id"
            _open(out, a, at, Opening(at, a.new_ticket_id, a.oid, _severity(a, 0, config), None, None, None))
            continue
        claim_key = (a.oid, d.detection_id)
        claim = claims.get(claim_key)
        if claim is not None and a.door != "link":
            out.fates.append(_known(out, a, at, d, claim, config, claims, facts.read_offsets, seen))
            continue
        severity = _severity(a, d.detection_priority, config)
        if a.door == "link":
            assert a.into is not None, "the link door names its ticket"
            if claim is None:
                out.commands.append((at, LinkDetection(a.into, d, severity)))
                claims[claim_key] = Claim(a.into, content=d)
                out.fates.append(Fate("linked", a.into))
            elif claim.ticket_id == a.into:  # already there: the command decides nothing, answers the state
                out.commands.append((at, LinkDetection(a.into, d, severity)))
                out.fates.append(Fate("unchanged", a.into))
            else:
                out.fates.append(Fate("refused", claim.ticket_id, "linked_elsewhere"))
            continue
        continues = None
        group = None if key is None else groups.setdefault((a.oid, key), [])
        if group is not None:
            chosen = choose(group, d, config)
            if chosen is not None:
                out.commands.append((at, LinkDetection(chosen.ticket_id, d, severity)))
                chosen.detection_count += 1
                claims[claim_key] = Claim(chosen.ticket_id, content=d)
                out.fates.append(Fate("joined", chosen.ticket_id))
                continue
            capped = full(group, d, config)
            continues = capped.ticket_id if capped else None
        ticket_id = ticket_id_for_detection(a.oid, d.detection_id, facts.taken)
        if group is not None:
            group.append(GroupCandidate(ticket_id, d.detected_at, 1))
        claims[claim_key] = Claim(ticket_id, content=d)
        _open(out, a, at, Opening(at, ticket_id, a.oid, severity, d, key, continues))
    return out


def _severity(a: Arrival, priority: int, config: OrgConfig) -> Severity:
    """The caller's own severity (the extension's), else the org's mapping of the priority."""
    return a.severity or severity_for(priority, config.severity_mapping)


def _open(out: Plan, a: Arrival, at: int, opening: Opening) -> None:
    out.openings.append(opening)
    out.fates.append(Fate("opened", opening.ticket_id))
    tid = opening.ticket_id
    if a.assignee:
        out.commands.append((at, UpdateTicket(tid, TicketChanges(assignee=a.assignee))))
    if a.note and a.note_id is not None:
        out.commands.append((at, AddNote(tid, a.note_id, a.note, "general")))


def _known(
    out: Plan,
    a: Arrival,
    at: int,
    d: Detection,
    claim: Claim,
    config: OrgConfig,
    claims: dict[tuple[str, str], Claim],
    read: dict[tuple[str, int], int],
    seen: set[tuple[str, int, int]],
) -> Fate:
    """A detection id its org already holds: a message read before is nothing; new content is an
    update of its ticket; the same content is a re-send, counted when it came over Kafka (an API
    door's repeat is the trigger firing on an update that changed nothing of it)."""
    tid = claim.ticket_id
    if a.position is not None:
        topic, partition, offset = a.position
        if offset <= read.get((topic, partition), -1) or a.position in seen:
            return Fate("redelivered", tid)
        seen.add(a.position)
    digest = content_digest(d)
    if digest is not None and digest != claim.current_digest():
        out.commands.append((at, RefreshDetection(tid, d, _severity(a, d.detection_priority, config))))
        claims[(a.oid, d.detection_id)] = Claim(tid, digest)
        return Fate("updated", tid)
    if a.door == "kafka":
        out.recount[tid] = out.recount.get(tid, 0) + 1
        return Fate("counted", tid)
    return Fate("unchanged", tid)


def commands(p: Plan, numbers: dict[str, list[int]], now: datetime) -> list[tuple[int | None, TicketCommand]]:
    """The plan as commands on tickets, in the order they are decided: the openings (numbered in
    arrival order from `numbers`, per org), then links and updates, then the counts."""
    issued = {oid: iter(n) for oid, n in numbers.items()}
    out: list[tuple[int | None, TicketCommand]] = [
        (
            o.at,
            OpenTicket(
                o.ticket_id,
                o.oid,
                next(issued[o.oid]),
                o.severity,
                o.detection,
                o.group_key,
                o.continues_ticket_id,
            ),
        )
        for o in p.openings
    ]
    out.extend(p.commands)
    out.extend((None, CountDuplicates(tid, n, now)) for tid, n in p.recount.items())
    return out


def tickets_per_org(p: Plan) -> Counter[str]:
    return Counter(o.oid for o in p.openings)
