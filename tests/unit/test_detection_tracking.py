"""What the ExtraHop appliance is told: the mapping table of docs/integrations.md, event by event."""

import uuid
from datetime import UTC, datetime

import pytest

from domain.commands import AbsorbMerge, LinkDetection, MergeInto, OpenTicket, TicketChanges, TicketCommand
from domain.commands import UpdateTicket as Update
from domain.config import DEFAULT_CONFIG, apply_patch, split_api_key
from domain.detection_tracking import DetectionTracking, changes, linked_by
from domain.detections import Detection, SourceFormat
from domain.errors import InvalidValue
from domain.ticket import TicketState, decide, fold
from domain.ticket_links import render_ticket_url

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def det(i: int, source: SourceFormat = "extrahop") -> Detection:
    return Detection(
        detection_id=str(i), oid="org", detection_cat="sec.lateral", detection_source=source,
        detection_priority=8, sensor_id="", hostname="", detected_at=NOW, source_format=source,
    )  # fmt: skip


def run(
    state: TicketState | None, command: TicketCommand
) -> tuple[TicketState, list[tuple[str, DetectionTracking]]]:
    """Decide and evolve: what the command's events, told as one, send."""
    events = decide(command, state, NOW)
    after = fold(events, state)
    assert after is not None
    return after, changes(state, after, [d for e in events for d in linked_by(e)])


def T(
    number: int, status: str, assignee: str | None = None, resolution: str | None = None
) -> DetectionTracking:
    return DetectionTracking(str(number), status, assignee, resolution)  # type: ignore[arg-type]


def test_each_change_of_a_tracked_field_goes_to_every_extrahop_detection_and_nothing_else_does() -> None:
    tid = uuid.uuid4()
    state, sent = run(None, OpenTicket(tid, "org", 7, "high", det(4437)))
    assert sent == [("4437", T(7, "new"))]
    state, sent = run(state, LinkDetection(tid, det(4438)))  # grouped: only the new one is told
    assert sent == [("4438", T(7, "new"))]
    state, sent = run(state, LinkDetection(tid, det(9, "limacharlie")))  # not the appliance's
    assert sent == []
    state, sent = run(state, Update(tid, TicketChanges(summary="lateral movement", tags=["x"])))
    assert sent == []  # nothing the appliance shows
    state, sent = run(state, Update(tid, TicketChanges(status="acknowledged", assignee="sally")))
    # status_changed, acknowledged, assigned: one change
    assert sent == [("4437", T(7, "acknowledged", "sally")), ("4438", T(7, "acknowledged", "sally"))]
    state, sent = run(state, Update(tid, TicketChanges(status="escalated")))
    assert [s for _, s in sent] == [T(7, "in_progress", "sally")] * 2
    state, sent = run(state, Update(tid, TicketChanges(status="in_progress")))
    assert sent == []  # escalated and in_progress look the same on the appliance
    state, sent = run(state, Update(tid, TicketChanges(status="resolved", classification="true_positive")))
    assert [s for _, s in sent] == [T(7, "closed", "sally", "action_taken")] * 2
    state, sent = run(state, Update(tid, TicketChanges(classification="false_positive")))
    assert [s for _, s in sent] == [T(7, "closed", "sally", "no_action_taken")] * 2
    state, sent = run(state, Update(tid, TicketChanges(status="in_progress")))  # reopened
    assert [s for _, s in sent] == [T(7, "in_progress", "sally")] * 2


def test_a_merge_hands_the_detections_to_the_target_ticket() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    source, _ = run(None, OpenTicket(a, "org", 1, "high", det(1)))
    target, _ = run(None, OpenTicket(b, "org", 2, "high", det(2)))
    target, _ = run(target, Update(b, TicketChanges(status="acknowledged")))
    source, sent = run(source, MergeInto(a, b, 2, "org"))
    assert sent == []  # the merged ticket says nothing more
    target, sent = run(target, AbsorbMerge(b, a, 1, "org", tuple(source.detections.values())))
    assert sent == [("1", T(2, "acknowledged"))]


def test_a_closed_ticket_without_a_classification_has_no_resolution() -> None:
    tid = uuid.uuid4()
    state, _ = run(None, OpenTicket(tid, "org", 3, "low", det(5)))
    state, sent = run(state, Update(tid, TicketChanges(status="closed")))
    assert sent == [("5", T(3, "closed"))]


def test_the_api_key_is_kept_out_of_the_configuration_and_only_its_fingerprint_is_recorded() -> None:
    patch, key = split_api_key({"extrahop": {"url": "https://eh.example", "api_key": "s3cret-key-0123"}})
    assert key == "s3cret-key-0123"
    config = apply_patch(DEFAULT_CONFIG, patch)
    assert config.extrahop is not None and config.extrahop.enabled
    assert config.extrahop.api_key_fingerprint and "s3cret" not in str(config)
    assert split_api_key({"extrahop": {"enabled": False}}) == ({"extrahop": {"enabled": False}}, None)
    for bad, field in (
        ({"extrahop": {"url": "https://eh.example", "api_key": "short"}}, "extrahop.api_key"),
        ({"extrahop": {"url": "https://eh.example", "api_key": "has a space in"}}, "extrahop.api_key"),
        (
            {"extrahop": {"url": "https://eh.example", "api_key_fingerprint": "sha256:00"}},
            "extrahop.api_key_fingerprint",
        ),
    ):
        with pytest.raises(InvalidValue) as refused:
            split_api_key(bad)
        assert refused.value.field == field


def test_ticket_urls_quote_what_they_substitute() -> None:
    template = "https://soc.example/tickets/$ticket_id?oid=$oid"
    assert render_ticket_url(template, "42", "org a/b") == "https://soc.example/tickets/42?oid=org%20a%2Fb"
    assert render_ticket_url("https://jira.example/browse/$ticket_id", "SEC-1?x", "o") == (
        "https://jira.example/browse/SEC-1%3Fx"
    )
