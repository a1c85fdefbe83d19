import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.commands import LinkDetection, OpenTicket
from domain.detections import Detection
from domain.errors import TicketAlreadyExists, TicketClosed, TicketNotFound
from domain.events import DetectionAdded, TicketCreated, decode_event, encode_event, event_details, event_type
from domain.lifecycle import TERMINAL, TRANSITIONS, allowed_next, can_transition
from domain.ticket import decide, evolve, fold

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def detection(i: int = 1, oid: str = "org") -> Detection:
    return Detection(
        detection_id=f"d{i}", oid=oid, detection_cat="cat", detection_source="src", detection_priority=5,
        sensor_id="s", hostname="h", detected_at=NOW, source_format="limacharlie",
    )  # fmt: skip


def opened(ticket_id: uuid.UUID) -> list[Any]:
    return decide(OpenTicket(ticket_id, "org", 7, "high", detection(1)), None, NOW)


def test_open_ticket_records_created_with_the_detection() -> None:
    tid = uuid.uuid4()
    [event] = opened(tid)
    assert event == TicketCreated(
        ts=NOW, ticket_id=tid, oid="org", ticket_number=7, severity="high", detection=detection(1)
    )
    state = fold([event])
    assert state is not None
    assert (state.status, state.ticket_number, state.detection_count, state.version) == ("new", 7, 1, 1)
    assert state.created_at == NOW


def test_opening_an_existing_ticket_is_refused() -> None:
    tid = uuid.uuid4()
    state = fold(opened(tid))
    with pytest.raises(TicketAlreadyExists):
        decide(OpenTicket(tid, "org", 8, "low"), state, NOW)


def test_linking_counts_each_detection_once() -> None:
    tid = uuid.uuid4()
    state = fold(opened(tid))
    later = NOW + timedelta(minutes=1)
    events = decide(LinkDetection(tid, detection(2)), state, later)
    assert events == [DetectionAdded(ts=later, detection=detection(2))]
    state = fold(events, state)
    assert state is not None
    assert (state.detection_count, state.version) == (2, 2)
    assert decide(LinkDetection(tid, detection(2)), state, later) == []
    assert decide(LinkDetection(tid, detection(1)), state, later) == []


def test_linking_to_a_missing_or_terminal_ticket_is_refused() -> None:
    tid = uuid.uuid4()
    with pytest.raises(TicketNotFound):
        decide(LinkDetection(tid, detection()), None, NOW)
    state = fold(opened(tid))
    assert state is not None
    import msgspec

    for status in TERMINAL:
        with pytest.raises(TicketClosed):
            decide(LinkDetection(tid, detection(3)), msgspec.structs.replace(state, status=status), NOW)


def test_event_before_created_is_a_bug() -> None:
    with pytest.raises(ValueError, match="before created"):
        evolve(None, DetectionAdded(ts=NOW, detection=detection()))


def test_events_round_trip_with_stable_tags() -> None:
    events = [*opened(uuid.uuid4()), DetectionAdded(ts=NOW, detection=detection(2))]
    assert [event_type(e) for e in events] == ["created", "detection_added"]
    for e in events:
        data = encode_event(e)
        assert data.startswith(b'{"type":"' + event_type(e).encode())
        assert decode_event(data) == e
    details = event_details(events[1])
    assert "ts" not in details and "type" not in details
    assert details["detection"]["detection_id"] == "d2"  # type: ignore[index]


def test_lifecycle_is_the_seed_diagram() -> None:
    seed = {
        ("new", "acknowledged"), ("new", "in_progress"), ("new", "escalated"), ("new", "closed"),
        ("new", "merged"),
        ("acknowledged", "in_progress"), ("acknowledged", "escalated"), ("acknowledged", "closed"),
        ("acknowledged", "merged"), ("in_progress", "escalated"), ("in_progress", "resolved"),
        ("in_progress", "closed"), ("in_progress", "merged"), ("escalated", "in_progress"),
        ("escalated", "resolved"), ("escalated", "closed"), ("escalated", "merged"), ("resolved", "closed"),
        ("resolved", "in_progress"), ("resolved", "merged"),
    }  # fmt: skip
    table = {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts}
    assert table == seed
    assert {"closed", "merged"} == TERMINAL
    assert allowed_next("closed") == ()
    assert can_transition("resolved", "in_progress")
    assert not can_transition("new", "resolved")
