"""The intake plan, as properties: however a sequence of arrivals is cut into batches, the tickets
are the same; a batch taken in again changes nothing; a purged org gets nothing. The world the plan
reads its facts from is kept here in memory, folded from the domain's own decisions."""

import itertools
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid5

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.commands import TicketChanges, UpdateTicket
from domain.config import OrgConfig, Recurrence
from domain.detections import Detection, DetectionEntities, detection_tags, extrahop_priority
from domain.events import TicketCreated
from domain.grouping import GroupCandidate
from domain.intake import (
    Arrival,
    Claim,
    Facts,
    Plan,
    Tombstone,
    commands,
    content_digest,
    group_keys,
    plan,
    tickets_per_org,
)
from domain.lifecycle import OPEN
from domain.rules import GroupingRule, RuleMatch
from domain.suppressions import Suppression
from domain.ticket import TicketState, decide, evolve

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
GROUPED, PLAIN, PURGED, LINKING = "org-grouped", "org-plain", "org-purged", "org-linking"
BY_USER = GroupingRule(
    "by-user", ("user",), RuleMatch(category="cat0"), 20, "sliding", max_span_minutes=60, max_detections=4
)
CONFIGS = {
    # A rule keyed on an entity with a sliding window, the org's own keys for the rest, and
    # detections that recur on a resolved ticket reopen it.
    GROUPED: OrgConfig(
        auto_grouping_enabled=True,
        grouping_window_minutes=30,
        grouping_max_detections=3,
        grouping_rules=(BY_USER,),
        recurrence=Recurrence("reopen", 60),
    ),
    PLAIN: OrgConfig(),
    PURGED: OrgConfig(),
    LINKING: OrgConfig(auto_grouping_enabled=True, recurrence=Recurrence("link", 60)),  # a new ticket, linked
}
NOTES = UUID("00000000-0000-0000-0000-000000000001")
# PLAIN's detections of cat1 from sensor s0 are held (but not its critical ones); one that expired holds none.
SUPPRESSIONS = {
    PLAIN: [
        Suppression(
            UUID(int=1), PLAIN, RuleMatch(category="cat1"), "noise", NOW + timedelta(days=1), {"sensor": "s0"}
        ),
        Suppression(UUID(int=2), PLAIN, RuleMatch(), "expired", NOW - timedelta(seconds=1)),
    ]
}
# Tickets resolved at T0 before any drawn arrival, for recurrences to find.
PRELUDE = [(oid, n) for oid in (GROUPED, LINKING) for n in range(4)]


class World:
    """What the write side would hold: ticket states, groups, numbers and read offsets."""

    def __init__(self, tombstones: dict[str, Tombstone] | None = None) -> None:
        self.states: dict[UUID, TicketState] = {}
        self.groups: dict[UUID, tuple[str, str, datetime]] = {}
        self.numbers: Counter[str] = Counter()
        self.read: dict[tuple[str, int], int] = {}
        self.tombstones = tombstones or {}
        self.held: Counter[UUID] = Counter()  # suppression -> detections it held
        prelude = [
            Arrival(oid, "extension", msgspec.structs.replace(detection(oid, n, "limacharlie", -30, 0),
                                                              detection_id=f"pre-{n}"))
            for oid, n in PRELUDE
        ]  # fmt: skip
        self.take_in(prelude)
        for tid, state in list(self.states.items()):  # resolved at T0
            for status in ("in_progress", "resolved"):
                for event in decide(UpdateTicket(tid, TicketChanges(status=status)), state, T0):
                    state = evolve(state, event)
            self.states[tid] = state

    def facts(self) -> Facts:
        claims = {
            (s.oid, did): Claim(s.ticket_id, content_digest(d))
            for s in self.states.values()
            for did, d in s.detections.items()
        }
        candidates: dict[tuple[str, str], list[GroupCandidate]] = {}
        for tid, (oid, key, first) in self.groups.items():
            s = self.states[tid]
            if s.status in OPEN or s.status == "resolved":
                last = max((d.detected_at for d in s.detections.values()), default=first)
                resolved = s.status_changed_at if s.status == "resolved" else None
                candidates.setdefault((oid, key), []).append(
                    GroupCandidate(tid, first, s.detection_count, last, resolved, s.ticket_number)
                )
        return Facts(
            CONFIGS,
            dict(self.tombstones),
            claims,
            candidates,
            dict(self.read),
            suppressions=SUPPRESSIONS,
            now=NOW,
        )

    def take_in(self, arrivals: Sequence[Arrival]) -> Plan:
        p = plan(arrivals, group_keys(arrivals, CONFIGS), self.facts())
        numbers: dict[str, list[int]] = {}
        for oid, n in tickets_per_org(p).items():
            numbers[oid] = list(range(self.numbers[oid] + 1, self.numbers[oid] + n + 1))
            self.numbers[oid] += n
        for _, command in commands(p, numbers, NOW):
            state = self.states.get(command.ticket_id)
            for event in decide(command, state, NOW):
                state = evolve(state, event)
                if isinstance(event, TicketCreated) and event.group_key and event.detection:
                    self.groups[event.ticket_id] = (event.oid, event.group_key, event.detection.detected_at)
            if state is not None:
                self.states[command.ticket_id] = state
        for a in arrivals:
            if a.position is not None:
                topic, partition, offset = a.position
                self.read[(topic, partition)] = max(self.read.get((topic, partition), -1), offset)
        self.held.update({sid: len(held) for sid, held in p.suppressed.items()})
        return p

    def tickets(self) -> dict[UUID, tuple[Any, ...]]:
        """What an analyst sees of each ticket (not how many events it took to get there)."""
        return {
            tid: (
                s.oid,
                s.ticket_number,
                s.severity,
                tuple(s.detections.values()),
                s.duplicate_count,
                s.tags,
                s.summary,
                s.assignee,
                s.notes,
                s.status,
                s.related_ticket_numbers,
            )
            for tid, s in self.states.items()
        } | {sid: ("held", n) for sid, n in self.held.items()}


def detection(oid: str, n: int, fmt: str, minute: int, variant: int) -> Detection:
    at = T0 + timedelta(minutes=minute)
    if fmt == "limacharlie":
        user = DetectionEntities(user=f"u{n % 2}") if n % 3 else None  # some carry no user
        return Detection(
            f"lc-{n}",
            oid,
            f"cat{n % 2}",
            "edr",
            (n * 3) % 11,
            f"s{n % 3}",
            "h",
            at,
            "limacharlie",
            entities=user,
        )
    risk = (30, 95, 60)[variant]
    return Detection(f"eh-{n}", oid, "cifs", "extrahop", extrahop_priority(risk), f"s{n % 2}", "pc", at,
                     "extrahop", title=f"title {variant % 2}", description="d",
                     tags=detection_tags(["sec.lateral", *(["sec.exfil"] if variant else [])]))  # fmt: skip


@st.composite
def arrivals(
    draw: st.DrawFn,
    orgs: Sequence[str] = (GROUPED, PLAIN, LINKING),
    doors: Sequence[str] = ("kafka", "extension", "issue"),
) -> list[Arrival]:
    count = draw(st.integers(1, 40))
    offsets = Counter[int]()
    out = []
    for _ in range(count):
        oid = draw(st.sampled_from(orgs))
        fmt = draw(st.sampled_from(["limacharlie", "extrahop"]))
        n = draw(st.integers(0, 9))  # a small pool of ids: re-sends and updates happen
        d = detection(oid, n, fmt, draw(st.integers(0, 120)), draw(st.integers(0, 2)))
        door = draw(st.sampled_from([doors[0], *doors]))
        if door == "kafka":
            partition = draw(st.integers(0, 1))
            offsets[partition] += 1
            out.append(Arrival(oid, "kafka", d, position=("d", partition, offsets[partition])))
        elif door == "issue":
            out.append(
                Arrival(oid, "issue", d, assignee="escalations", note="from the trigger", note_id=NOTES)
            )
        else:
            out.append(Arrival(oid, "extension", d))
    return out


def cuts(draw: Any, n: int) -> list[int]:
    return sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6)))) if n > 1 else []


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_split_into_batches_gives_the_same_tickets(data: st.DataObject) -> None:
    sequence = data.draw(arrivals())
    whole = World()
    whole.take_in(sequence)
    bounds = [0, *cuts(data.draw, len(sequence)), len(sequence)]
    split = World()
    for start, end in itertools.pairwise(bounds):
        split.take_in(sequence[start:end])
    assert split.tickets() == whole.tickets()
    assert whole.states  # something was taken in


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_taking_a_batch_in_again_changes_nothing(data: st.DataObject) -> None:
    """Over Kafka, where a batch is its messages' positions. (An API door's request has no such
    identity: the same request again is the trigger firing again, which an update test covers.)"""
    sequence = data.draw(arrivals(doors=("kafka",)))
    bounds = [0, *cuts(data.draw, len(sequence)), len(sequence)]
    batches = [sequence[s:e] for s, e in itertools.pairwise(bounds)]
    world = World()
    for batch in batches:
        world.take_in(batch)
    before = dict(world.states)
    again = world.take_in(data.draw(st.sampled_from(batches)))
    assert world.states == before  # versions included: not one event
    assert {f.kind for f in again.fates} == {"redelivered"}


def sent_again(a: Arrival) -> Arrival:
    """The same detection in a later message (a position past every one drawn)."""
    if a.position is None:
        return a
    topic, partition, offset = a.position
    return msgspec.structs.replace(a, position=(topic, partition, offset + 1_000_000))


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_a_purged_org_gets_nothing_through_any_door(data: st.DataObject) -> None:
    world = World({PURGED: Tombstone(T0 - timedelta(days=1))})
    sequence = data.draw(arrivals((GROUPED, PURGED)))
    p = world.take_in(sequence)
    assert not [s for s in world.states.values() if s.oid == PURGED]
    for a, fate in zip(sequence, p.fates, strict=True):
        assert (fate.kind == "refused" and fate.refusal == "unsubscribed") == (a.oid == PURGED)
    # Re-subscribed: what was detected before the purge still gets nothing; what came after does.
    world.tombstones[PURGED] = Tombstone(T0 + timedelta(minutes=60), resubscribed_at=NOW)
    sequence = [sent_again(a) for a in sequence]  # read anew (a message read before stays read)
    p = world.take_in(sequence)
    for a, fate in zip(sequence, p.fates, strict=True):
        if a.oid == PURGED and a.detection and a.detection.detected_at < T0 + timedelta(minutes=60):
            assert fate.kind == "dropped"
    assert all(
        d.detected_at >= T0 + timedelta(minutes=60)
        for s in world.states.values()
        if s.oid == PURGED
        for d in s.detections.values()
    )


def ticket_of(world: World, detection_id: str) -> TicketState:
    [state] = [s for s in world.states.values() if detection_id in s.detections]
    return state


def test_an_extrahop_update_raises_severity_adds_tags_and_a_repeat_changes_nothing() -> None:
    world = World()
    low, high = detection(PLAIN, 1, "extrahop", 0, 0), detection(PLAIN, 1, "extrahop", 5, 1)
    world.take_in([Arrival(PLAIN, "issue", low)])
    ticket = ticket_of(world, "eh-1")
    assert (ticket.severity, ticket.tags, ticket.summary) == ("medium", ("sec.lateral",), "title 0")
    fates = world.take_in([Arrival(PLAIN, "issue", high)]).fates
    updated = ticket_of(world, "eh-1")
    assert [f.kind for f in fates] == ["updated"]
    assert updated.severity == "critical" and updated.tags == ("sec.lateral", "sec.exfil")
    assert updated.detections["eh-1"].title == "title 1" and updated.summary == "title 0"
    assert updated.detections["eh-1"].detected_at == low.detected_at  # when it was first detected
    world.take_in([Arrival(PLAIN, "issue", high)])
    assert ticket_of(world, "eh-1").version == updated.version
    # Lower again: recorded, never downgraded.
    world.take_in([Arrival(PLAIN, "kafka", low, position=("d", 0, 1))])
    assert ticket_of(world, "eh-1").severity == "critical"


def test_a_limacharlie_resend_over_kafka_is_counted_and_through_an_api_door_is_not() -> None:
    world = World()
    d = detection(PLAIN, 2, "limacharlie", 0, 0)
    world.take_in([Arrival(PLAIN, "kafka", d, position=("d", 0, 1))])
    fates = world.take_in(
        [
            Arrival(PLAIN, "kafka", d, position=("d", 0, 1)),  # the same message again: a redelivery
            Arrival(PLAIN, "kafka", d, position=("d", 0, 2)),  # sent again: a re-send
            Arrival(PLAIN, "extension", d),  # the rule fired again
        ]
    ).fates
    assert [f.kind for f in fates] == ["redelivered", "counted", "unchanged"]
    assert ticket_of(world, "lc-2").duplicate_count == 1


def test_the_link_door_refuses_a_detection_of_another_ticket() -> None:
    world = World()
    a, b = detection(PLAIN, 3, "limacharlie", 0, 0), detection(PLAIN, 4, "limacharlie", 0, 0)
    world.take_in(
        [Arrival(PLAIN, "kafka", a, position=("d", 0, 1)), Arrival(PLAIN, "kafka", b, position=("d", 0, 2))]
    )
    into = uuid5(UUID("5b0c4b7e-4d1a-4f53-9a43-2f1e7c3b9d10"), f"{PLAIN}\x1flc-3")
    p = world.take_in([Arrival(PLAIN, "link", b, into=into), Arrival(PLAIN, "link", a, into=into)])
    assert [(f.kind, f.refusal) for f in p.fates] == [("refused", "linked_elsewhere"), ("unchanged", None)]


def test_a_taken_id_gives_the_detections_next_one() -> None:
    from domain.intake import ticket_id_for_detection

    first = ticket_id_for_detection("o", "d")
    second = ticket_id_for_detection("o", "d", frozenset({first}))
    third = ticket_id_for_detection("o", "d", frozenset({first, second}))
    assert len({first, second, third}) == 3
    assert ticket_id_for_detection("o", "d", frozenset({first})) == second  # deterministic
