"""Any sequence of commands keeps the aggregate's invariants (hypothesis)."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain import events as ev
from domain.commands import (
    AddEntity,
    AddNote,
    LinkDetection,
    MergeInto,
    OpenTicket,
    RemoveEntity,
    TicketChanges,
    UnlinkDetection,
    UpdateTicket,
)
from domain.detections import Detection
from domain.errors import DomainError
from domain.evidence import Entity
from domain.lifecycle import STATUSES, TERMINAL
from domain.ticket import TicketState, decide, evolve

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TID = uuid.UUID(int=1)
ENTITY_IDS = [uuid.UUID(int=100 + i) for i in range(3)]


def det(i: int) -> Detection:
    return Detection(
        detection_id=f"d{i}", oid="org", detection_cat="c", detection_source="s", detection_priority=i % 11,
        sensor_id="s", hostname="h", detected_at=T0, source_format="limacharlie",
    )  # fmt: skip


changes = st.builds(
    TicketChanges,
    status=st.sampled_from(STATUSES),
    assignee=st.sampled_from([None, "a@x", "b@x"]),
    classification=st.sampled_from(["pending", "true_positive", "false_positive"]),
    tags=st.lists(st.sampled_from(["x", "X", "y", "z"]), max_size=4),
)
partial = changes.map(lambda c: c) | st.builds(TicketChanges, status=st.sampled_from(STATUSES))
commands = st.one_of(
    partial.map(lambda c: UpdateTicket(TID, c)),
    st.integers(0, 6).map(lambda i: LinkDetection(TID, det(i))),
    st.integers(0, 6).map(lambda i: UnlinkDetection(TID, f"d{i}")),
    st.just(AddNote(TID, uuid.UUID(int=7), "note")),
    st.integers(0, 2).map(lambda i: AddEntity(TID, Entity(ENTITY_IDS[i], "ip", f"10.0.0.{i}"))),
    st.integers(0, 2).map(lambda i: RemoveEntity(TID, ENTITY_IDS[i])),
    st.just(MergeInto(TID, uuid.UUID(int=2), 2, "org")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(commands, st.integers(0, 3600)), max_size=30))
def test_invariants_hold_for_any_command_sequence(steps: list[Any]) -> None:
    now = T0
    state = evolve(None, decide(OpenTicket(TID, "org", 1, "low", det(0)), None, now)[0])
    linked = {"d0"}  # an independent model of which detections are linked
    for command, seconds in steps:
        now += timedelta(seconds=seconds)
        before = state
        try:
            events = decide(command, state, now)
        except DomainError:
            continue  # refused: nothing happens
        for e in events:
            state = evolve(state, e)
            if isinstance(e, ev.DetectionAdded):
                linked.add(e.detection.detection_id)
            elif isinstance(e, ev.DetectionRemoved):
                linked.discard(e.detection_id)
        check(before, state, len(events))
        assert state.detection_count == len(linked)


def check(before: TicketState, after: TicketState, n_events: int) -> None:
    assert after.version == before.version + n_events  # contiguous versions
    if before.status in TERMINAL:
        assert after.status == before.status  # terminal states stay terminal
    assert after.updated_at >= before.updated_at
    for field in ("acknowledged_at", "resolved_at", "closed_at"):
        old, new = getattr(before, field), getattr(after, field)
        if old is not None:
            assert new == old  # set once, never moved
        if new is not None:
            assert new >= after.created_at
    if after.status == "merged":
        assert after.merged_into_ticket_id is not None
    if after.acknowledged_at and after.resolved_at:
        assert after.acknowledged_at <= after.resolved_at
    assert len({t.casefold() for t in after.tags}) == len(after.tags)
