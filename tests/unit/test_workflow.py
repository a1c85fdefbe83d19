"""The analyst's workflow rules of the aggregate: lifecycle, PATCH fields, evidence, merge."""

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from domain import events as ev
from domain.commands import (
    AbsorbMerge,
    AddEntity,
    AddTelemetry,
    EntityChanges,
    MergeInto,
    OpenTicket,
    RemoveEntity,
    TicketChanges,
    UnlinkDetection,
    UpdateEntity,
    UpdateTicket,
)
from domain.detections import Detection
from domain.errors import DuplicateItem, InvalidTransition, InvalidValue, ItemNotFound, MergeRefused
from domain.evidence import Entity, Telemetry, normalize_entity_value
from domain.lifecycle import STATUSES, TRANSITIONS, Status
from domain.tags import normalize_tags
from domain.ticket import TicketState, decide, fold, plan_merge

T0 = datetime(2026, 5, 1, 9, tzinfo=UTC)


def det(i: str, oid: str = "org") -> Detection:
    return Detection(
        detection_id=i, oid=oid, detection_cat="c", detection_source="s", detection_priority=5,
        sensor_id="s1", hostname="h", detected_at=T0, source_format="limacharlie",
    )  # fmt: skip


def new_ticket(number: int = 1, oid: str = "org") -> TicketState:
    tid = uuid.uuid4()
    state = fold(decide(OpenTicket(tid, oid, number, "high", det(f"d{number}", oid)), None, T0))
    assert state is not None
    return state


def apply(state: TicketState, changes: TicketChanges, at: datetime = T0) -> tuple[TicketState, list[Any]]:
    events = decide(UpdateTicket(state.ticket_id, changes), state, at)
    result = fold(events, state)
    assert result is not None
    return result, events


def folded(events: list[ev.TicketEvent], state: TicketState) -> TicketState:
    result = fold(events, state)
    assert result is not None
    return result


def with_status(status: Status) -> TicketState:
    return msgspec.structs.replace(new_ticket(), status=status)


@pytest.mark.parametrize(
    ("current", "target"), [(a, b) for a, nxt in TRANSITIONS.items() for b in nxt if b != "merged"]
)
def test_every_allowed_transition_records_status_changed(current: Status, target: Status) -> None:
    state, events = apply(with_status(current), TicketChanges(status=target))
    assert state.status == target
    assert events[0] == ev.StatusChanged(ts=T0, from_status=current, to_status=target)
    milestones = {"acknowledged": ev.Acknowledged, "resolved": ev.Resolved, "closed": ev.Closed}
    if target in milestones:
        assert type(events[1]) is milestones[target]
    elif (current, target) == ("resolved", "in_progress"):
        assert type(events[1]) is ev.Reopened
    else:
        assert len(events) == 1


@pytest.mark.parametrize(
    ("current", "target"),
    [(a, b) for a in STATUSES for b in STATUSES if a != b and b not in TRANSITIONS[a] and b != "merged"],
)
def test_every_other_transition_is_refused_naming_the_allowed_ones(current: Status, target: Status) -> None:
    with pytest.raises(InvalidTransition) as err:
        apply(with_status(current), TicketChanges(status=target))
    assert err.value.allowed == TRANSITIONS[current]


def test_merged_is_reached_only_by_merging() -> None:
    with pytest.raises(InvalidValue, match="merge"):
        apply(new_ticket(), TicketChanges(status="merged"))


def test_timestamps_first_ack_first_resolution_and_reopen() -> None:
    s, _ = apply(new_ticket(), TicketChanges(status="acknowledged"), T0 + timedelta(minutes=5))
    s, _ = apply(s, TicketChanges(status="in_progress"), T0 + timedelta(minutes=6))
    s, _ = apply(s, TicketChanges(status="resolved"), T0 + timedelta(hours=1))
    s, events = apply(s, TicketChanges(status="in_progress"), T0 + timedelta(hours=2))
    assert [type(e) for e in events] == [ev.StatusChanged, ev.Reopened]
    s, _ = apply(s, TicketChanges(status="resolved"), T0 + timedelta(hours=3))
    s, _ = apply(s, TicketChanges(status="closed"), T0 + timedelta(hours=4))
    assert s.acknowledged_at == T0 + timedelta(minutes=5)
    assert s.resolved_at == T0 + timedelta(hours=1)  # the first resolution is kept
    assert s.closed_at == T0 + timedelta(hours=4)
    assert s.updated_at == T0 + timedelta(hours=4)


def test_a_patch_applies_all_fields_or_none() -> None:
    s = new_ticket()
    with pytest.raises(InvalidTransition):
        apply(s, TicketChanges(assignee="bob@example.com", tags=["x"], status="resolved"))
    with pytest.raises(InvalidValue):
        apply(s, TicketChanges(assignee="bob@example.com", tags=["bad\x00tag"]))
    s2, events = apply(
        s,
        TicketChanges(
            status="escalated", assignee="bob@example.com", classification="true_positive",
            escalation_group="tier3", investigation_id="inv-1", summary="sum", conclusion="con", tags=["a", "A", "b"],
        ),
    )  # fmt: skip
    assert [ev.event_type(e) for e in events] == [
        "status_changed", "assigned", "classified", "escalated", "investigation_linked",
        "summary_updated", "conclusion_updated", "tags_updated",
    ]  # fmt: skip
    assert (s2.assignee, s2.classification, s2.escalation_group, s2.tags) == (
        "bob@example.com", "true_positive", "tier3", ("a", "b"),
    )  # fmt: skip
    tags_event = events[-1]
    assert (
        isinstance(tags_event, ev.TagsUpdated) and tags_event.old_tags == () and tags_event.tags == ("a", "b")
    )
    _, again = apply(s2, TicketChanges(assignee="bob@example.com", tags=["B", "a"]))
    assert [ev.event_type(e) for e in again] == ["tags_updated"]  # unchanged fields record nothing
    cleared, _ = apply(s2, TicketChanges(assignee=None))
    assert cleared.assignee is None


def test_classification_at_any_status() -> None:
    for status in STATUSES:
        s, events = apply(with_status(status), TicketChanges(classification="false_positive"))
        assert s.classification == "false_positive" and len(events) == 1


def test_tag_rules() -> None:
    assert normalize_tags(["Phish", "phish", "PHISH", "urgent"]) == ("Phish", "urgent")
    assert len(normalize_tags([f"t{i}" for i in range(50)])) == 50
    assert normalize_tags(["x" * 128]) == ("x" * 128,)
    for bad, reason in ((["x" * 129], "128"), ([f"t{i}" for i in range(51)], "50"), (["a\tb"], "printable"),
                        ([""], "empty")):  # fmt: skip
        with pytest.raises(InvalidValue, match=reason):
            normalize_tags(bad)


@pytest.mark.parametrize(
    ("kind", "raw", "stored"),
    [("ip", " 203.0.113.50 ", "203.0.113.50"), ("ip", "2001:DB8::0:1", "2001:db8::1"), ("domain", "Evil.COM.", "evil.com"),
     ("hash", "ABCDEF", "abcdef"), ("email", "Bob@X.org", "bob@x.org"), ("user", "CORP\\Bob", "CORP\\Bob"),
     ("url", "HTTP://X/Y", "HTTP://X/Y")],
)  # fmt: skip
def test_entity_values_are_normalised(kind: str, raw: str, stored: str) -> None:
    assert normalize_entity_value(kind, raw) == stored


def test_entities_duplicates_updates_and_removal() -> None:
    s = new_ticket()
    e = Entity(uuid.uuid4(), "ip", "203.0.113.5", verdict="suspicious")
    s = folded(decide(AddEntity(s.ticket_id, e), s, T0), s)
    assert s is not None
    with pytest.raises(DuplicateItem):
        decide(AddEntity(s.ticket_id, Entity(uuid.uuid4(), "ip", " 203.0.113.5")), s, T0)
    with pytest.raises(InvalidValue, match="IPv4"):
        decide(AddEntity(s.ticket_id, Entity(uuid.uuid4(), "ip", "999.1.1.1")), s, T0)
    [updated] = decide(UpdateEntity(s.ticket_id, e.entity_id, EntityChanges(verdict="benign")), s, T0)
    assert isinstance(updated, ev.EntityUpdated) and updated.changed == ("verdict",)
    assert decide(UpdateEntity(s.ticket_id, e.entity_id, EntityChanges(verdict="suspicious")), s, T0) == []
    with pytest.raises(ItemNotFound):
        decide(RemoveEntity(s.ticket_id, uuid.uuid4()), s, T0)
    s = folded(decide(RemoveEntity(s.ticket_id, e.entity_id), s, T0), s)
    assert s is not None and s.entities == {}


def test_entity_sightings_must_be_storable_times() -> None:
    """Year 1 at +14:00 is year 0 in UTC: accepted, it would have stopped the projector at its event."""
    s = new_ticket()
    year_zero = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    beyond = datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-14)))
    for field, when in (
        ("first_seen", year_zero),
        ("last_seen", beyond),
        ("first_seen", datetime(1969, 12, 31)),
    ):
        with pytest.raises(InvalidValue) as refused:
            sighting = msgspec.structs.replace(Entity(uuid.uuid4(), "ip", "203.0.113.5"), **{field: when})
            decide(AddEntity(s.ticket_id, sighting), s, T0)
        assert refused.value.field == field
    sighted = datetime(2026, 1, 1, 23, tzinfo=timezone(timedelta(hours=-5)))
    e = Entity(
        uuid.uuid4(), "ip", "203.0.113.5", first_seen=datetime(1970, 1, 1), last_seen=sighted
    )  # naive is UTC
    s = folded(decide(AddEntity(s.ticket_id, e), s, T0), s)
    assert s is not None
    with pytest.raises(InvalidValue) as refused:
        decide(UpdateEntity(s.ticket_id, e.entity_id, EntityChanges(last_seen=year_zero)), s, T0)
    assert refused.value.field == "last_seen"
    [updated] = decide(UpdateEntity(s.ticket_id, e.entity_id, EntityChanges(first_seen=None)), s, T0)
    assert isinstance(updated, ev.EntityUpdated) and updated.changed == ("first_seen",)


def test_telemetry_same_atom_twice_is_a_duplicate() -> None:
    s = new_ticket()
    t = Telemetry(uuid.uuid4(), "atom", "sid")
    s = folded(decide(AddTelemetry(s.ticket_id, t), s, T0), s)
    assert s is not None
    with pytest.raises(DuplicateItem):
        decide(AddTelemetry(s.ticket_id, Telemetry(uuid.uuid4(), "atom", "sid")), s, T0)


def test_unlinking_a_detection() -> None:
    s = new_ticket()
    with pytest.raises(ItemNotFound):
        decide(UnlinkDetection(s.ticket_id, "nope"), s, T0)
    s = folded(decide(UnlinkDetection(s.ticket_id, "d1"), s, T0), s)
    assert s is not None and s.detection_count == 0


def test_merge_plan_and_refusals() -> None:
    target, a, b = new_ticket(1), new_ticket(2), new_ticket(3)
    commands = plan_merge(target, [a, b])
    assert [type(c) for c in commands] == [MergeInto, AbsorbMerge, MergeInto, AbsorbMerge]
    state = target
    for c in commands:
        if c.ticket_id == target.ticket_id:
            state = fold(decide(c, state, T0), state)  # type: ignore[assignment]
    assert state.detection_count == 3
    with pytest.raises(MergeRefused, match="itself"):
        plan_merge(target, [target])
    with pytest.raises(InvalidValue, match="twice"):
        plan_merge(target, [a, a])
    for status in ("closed", "merged"):
        with pytest.raises(MergeRefused):
            plan_merge(msgspec.structs.replace(target, status=status), [a])
    with pytest.raises(InvalidTransition):
        decide(
            MergeInto(a.ticket_id, target.ticket_id, 1, "org"),
            msgspec.structs.replace(a, status="closed"),
            T0,
        )
    other_org = new_ticket(9, oid="org2")
    with pytest.raises(MergeRefused, match="orgs"):
        decide(MergeInto(other_org.ticket_id, target.ticket_id, 1, "org"), other_org, T0)


def test_an_external_ticket_link_is_recorded_when_it_changes_only() -> None:
    s, events = apply(
        new_ticket(), TicketChanges(external_ticket_id="TK-1", external_ticket_url="https://j/TK-1")
    )
    assert [type(e) for e in events] == [ev.ExternalTicketLinked]
    assert (events[0].old_external_ticket_id, s.external_ticket_id, s.external_ticket_url) == (
        None,
        "TK-1",
        "https://j/TK-1",
    )
    assert apply(s, TicketChanges(external_ticket_id="TK-1"))[1] == []  # the same issue again: nothing
    s, events = apply(s, TicketChanges(external_ticket_url="https://j/browse/TK-1"))  # a new link, same issue
    assert (events[0].external_ticket_id, s.external_ticket_url) == ("TK-1", "https://j/browse/TK-1")
    s, events = apply(s, TicketChanges(external_ticket_id=None))  # unlinked: the URL goes with it
    assert (events[0].old_external_ticket_id, s.external_ticket_id, s.external_ticket_url) == (
        "TK-1",
        None,
        None,
    )
