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
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

import msgspec

from domain.commands import (
    AddNote,
    CountDuplicates,
    LinkDetection,
    NoteRecurrence,
    OpenTicket,
    RecurOn,
    RefreshDetection,
    TicketChanges,
    TicketCommand,
    UpdateTicket,
)
from domain.config import OrgConfig
from domain.detections import CONTENT_FIELDS, Detection
from domain.grouping import GroupCandidate, Grouping, Keying, Rules, choose, full, recurred
from domain.severity import Severity, severity_for
from domain.suppressions import Holding, Suppression
from domain.tasks import Task, template_tasks

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
    "reopened",  # it recurred on a resolved ticket of its group, which it reopened
    "suppressed",  # held by a suppression: kept and counted, no ticket
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
    suppressions: dict[str, list[Suppression]] = {}  # per org, those not ended (expiry is checked at `now`)
    now: datetime | None = None  # when the batch is decided: a suppression past its expiry holds nothing


@dataclass(frozen=True, slots=True)
class Fate:
    kind: FateKind
    ticket_id: UUID | None = None
    refusal: Refusal | None = None
    reason: str | None = None
    held_by: UUID | None = None  # the suppression holding it


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
    grouping: Grouping | None = None
    related: GroupCandidate | None = None  # the resolved ticket this detection recurred on (`link`)
    tasks: tuple[Task, ...] = ()  # the org's task templates' tasks for it


@dataclass
class Plan:
    fates: list[Fate] = field(default_factory=list)
    openings: list[Opening] = field(default_factory=list)
    commands: list[tuple[int, TicketCommand]] = field(default_factory=list)  # (arrival index, command)
    recount: dict[UUID, int] = field(default_factory=dict)  # ticket -> re-sends counted
    suppressed: dict[UUID, list[Detection]] = field(default_factory=dict)  # suppression -> held, in order


def group_keys(arrivals: Sequence[Arrival], configs: dict[str, OrgConfig]) -> list[Keying | None]:
    """Each arrival's group (its key, window and the reason), or None where it has none: no rule
    matches it and its org neither groups nor follows recurrences, it has no detection, or it is
    linked to a ticket by hand."""
    rules = {oid: Rules(c) for oid, c in configs.items()}
    return [
        rules[a.oid].keying(a.detection, recurrence=configs[a.oid].recurrence.policy != "off")
        if a.detection is not None and a.door != "link"
        else None
        for a in arrivals
    ]


def lookback(keys: Sequence[Keying | None]) -> timedelta:
    """How long before a batch's earliest detection a group it may join or recur on can have
    started: the longest window span among its keys (a resolved group recurs on any age)."""
    return max((k.window.span() for k in keys if k is not None), default=timedelta(0))


def plan(arrivals: Sequence[Arrival], keys: Sequence[Keying | None], facts: Facts) -> Plan:
    """Each arrival's fate, in arrival order: earlier arrivals of the batch are facts for later ones."""
    out = Plan()
    claims = dict(facts.claims)
    groups = {k: [msgspec.structs.replace(c) for c in v] for k, v in facts.candidates.items()}
    holding = {oid: Holding(held) for oid, held in facts.suppressions.items()}
    seen: set[tuple[str, int, int]] = set()

    def redelivered(a: Arrival) -> bool:
        """A message read before (a crash, a replay). Asked only where taking it in again would
        change something: a detection already held, or one a suppression would count again. A new
        detection is never dropped on its offset alone (a topic made again starts from 0)."""
        if a.position is None:
            return False
        topic, partition, offset = a.position
        if offset <= facts.read_offsets.get((topic, partition), -1) or a.position in seen:
            return True
        seen.add(a.position)
        return False

    for at, (a, keying) in enumerate(zip(arrivals, keys, strict=True)):
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
            _open(
                out,
                a,
                at,
                Opening(at, a.new_ticket_id, a.oid, _severity(a, 0, config), None, None, None),
                config,
            )
            continue
        claim_key = (a.oid, d.detection_id)
        claim = claims.get(claim_key)
        if claim is not None and a.door != "link":
            if redelivered(a):
                out.fates.append(Fate("redelivered", claim.ticket_id))
            else:
                out.fates.append(_known(out, a, at, d, claim, config, claims))
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
        held = holding.get(a.oid)
        holder = held.holder(d, severity, facts.now) if held is not None and facts.now is not None else None
        if holder is not None:
            if redelivered(a):
                out.fates.append(Fate("redelivered"))
                continue
            out.suppressed.setdefault(holder.suppression_id, []).append(d)
            said = f"held by suppression {holder.suppression_id}: {holder.reason}"
            out.fates.append(Fate("suppressed", reason=said, held_by=holder.suppression_id))
            continue
        if keying is None:
            ticket_id = ticket_id_for_detection(a.oid, d.detection_id, facts.taken)
            claims[claim_key] = Claim(ticket_id, content=d)
            _open(out, a, at, Opening(at, ticket_id, a.oid, severity, d, None, None), config)
            continue
        group = groups.setdefault((a.oid, keying.key), [])
        why = keying.grouping if keying.joins else None
        continues = None
        if keying.joins:
            chosen = choose(group, d, keying.window)
            if chosen is not None:
                out.commands.append((at, LinkDetection(chosen.ticket_id, d, severity, why)))
                _took(chosen, d)
                claims[claim_key] = Claim(chosen.ticket_id, content=d)
                out.fates.append(Fate("joined", chosen.ticket_id))
                continue
            capped = full(group, d, keying.window)
            continues = capped.ticket_id if capped else None
        resolved = recurred(group, d, config)
        if resolved is not None and config.recurrence.policy == "reopen":
            out.commands.append((at, RecurOn(resolved.ticket_id, d, severity, why)))
            resolved.resolved_at = None  # open again: later detections of the batch join it
            _took(resolved, d)
            claims[claim_key] = Claim(resolved.ticket_id, content=d)
            out.fates.append(Fate("reopened", resolved.ticket_id))
            continue
        ticket_id = ticket_id_for_detection(a.oid, d.detection_id, facts.taken)
        group.append(GroupCandidate(ticket_id, d.detected_at, 1, d.detected_at))
        claims[claim_key] = Claim(ticket_id, content=d)
        opening = Opening(at, ticket_id, a.oid, severity, d, keying.key, continues, why, resolved)
        _open(out, a, at, opening, config)
    return out


def _took(group: GroupCandidate, d: Detection) -> None:
    group.detection_count += 1
    group.last_detected_at = max(group.last_detected_at or group.first_detected_at, d.detected_at)


def _severity(a: Arrival, priority: int, config: OrgConfig) -> Severity:
    """The caller's own severity (the extension's), else the org's mapping of the priority."""
    return a.severity or severity_for(priority, config.severity_mapping)


def severity_of(detections: Sequence[Detection], config: OrgConfig) -> Severity:
    """The severity of a ticket made of these detections (a split's new ticket): its highest."""
    return severity_for(max(d.detection_priority for d in detections), config.severity_mapping)


def _open(out: Plan, a: Arrival, at: int, opening: Opening, config: OrgConfig) -> None:
    if config.task_templates:
        category = opening.detection.detection_cat if opening.detection else None
        tasks = template_tasks(config.task_templates, opening.ticket_id, category, opening.severity)
        opening = replace(opening, tasks=tasks)
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
) -> Fate:
    """A detection id its org already holds: new content is an update of its ticket; the same
    content is a re-send, counted when it came over Kafka (an API door's repeat is the trigger
    firing on an update that changed nothing of it)."""
    tid = claim.ticket_id
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
    out: list[tuple[int | None, TicketCommand]] = []
    recurrences: list[tuple[int | None, TicketCommand]] = []
    for o in p.openings:
        number = next(issued[o.oid])
        related = o.related
        out.append(
            (
                o.at,
                OpenTicket(
                    o.ticket_id,
                    o.oid,
                    number,
                    o.severity,
                    o.detection,
                    o.group_key,
                    o.continues_ticket_id,
                    o.grouping,
                    related.ticket_id if related else None,
                    related.ticket_number if related else None,
                    o.tasks,
                ),
            )
        )
        if related is not None and o.detection is not None:
            note = NoteRecurrence(related.ticket_id, o.ticket_id, number, o.detection.detection_id)
            recurrences.append((o.at, note))
    out.extend(p.commands)
    out.extend(recurrences)
    out.extend((None, CountDuplicates(tid, n, now)) for tid, n in p.recount.items())
    return out


def tickets_per_org(p: Plan) -> Counter[str]:
    return Counter(o.oid for o in p.openings)
