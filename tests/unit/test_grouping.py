"""The auto-grouping rule and the configuration rules, pure."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from domain.commands import LinkDetection, OpenTicket
from domain.config import DEFAULT_CONFIG, OrgConfig, apply_patch, decide_config
from domain.detections import Detection
from domain.errors import InvalidValue
from domain.events import SeverityUpgraded
from domain.grouping import GroupCandidate, choose, default_window, full, group_key
from domain.ticket import decide, fold

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ON = msgspec.structs.replace(DEFAULT_CONFIG, auto_grouping_enabled=True)


def det(minutes: float, cat: str = "c", sensor: str = "s", priority: int = 3) -> Detection:
    return Detection(
        detection_id=str(uuid.uuid4()), oid="o", detection_cat=cat, detection_source="src",
        detection_priority=priority, sensor_id=sensor, hostname="h",
        detected_at=T0 + timedelta(minutes=minutes), source_format="limacharlie",
    )  # fmt: skip


def cand(minutes: float, count: int = 1) -> GroupCandidate:
    return GroupCandidate(uuid.uuid4(), T0 + timedelta(minutes=minutes), count)


def test_key_is_category_and_sensor_by_default() -> None:
    assert group_key(det(0, "c1", "s1"), ON) == group_key(det(5, "c1", "s1"), ON)
    assert group_key(det(0, "c1", "s1"), ON) != group_key(det(0, "c1", "s2"), ON)
    assert group_key(det(0, "c1", "s1"), ON) != group_key(det(0, "c2", "s1"), ON)
    by_cat = msgspec.structs.replace(ON, grouping_key_fields=["category"])
    assert group_key(det(0, "c1", "s1"), by_cat) == group_key(det(0, "c1", "s2"), by_cat)


def test_window_edges_on_detection_time() -> None:
    c = cand(0)
    assert choose([c], det(0), default_window(ON)) is c
    assert choose([c], det(59.999), default_window(ON)) is c
    assert choose([c], det(60), default_window(ON)) is None  # exactly the window later: a new ticket
    assert choose([c], det(-0.001), default_window(ON)) is None  # older than the group's first detection
    wide = msgspec.structs.replace(ON, grouping_window_minutes=120)
    assert choose([c], det(90), default_window(wide)) is c


def test_latest_group_wins_and_cap_overflows() -> None:
    old, recent = cand(0), cand(30)
    assert choose([old, recent], det(40), default_window(ON)) is recent
    capped = msgspec.structs.replace(ON, grouping_max_detections=3)
    full_group = cand(0, count=3)
    assert choose([full_group], det(10), default_window(capped)) is None
    assert full([full_group], det(10), default_window(capped)) is full_group
    assert full([cand(0, count=2)], det(10), default_window(capped)) is None


def test_severity_rises_but_never_falls_when_grouping() -> None:
    tid = uuid.uuid4()
    first = det(0, priority=3)
    state = fold(decide(OpenTicket(tid, "o", 1, "medium", first), None, T0))
    events = decide(LinkDetection(tid, det(1, priority=9), "critical"), state, T0)
    assert [type(e).__name__ for e in events] == ["DetectionAdded", "SeverityUpgraded"]
    up = events[1]
    assert isinstance(up, SeverityUpgraded) and (up.old_severity, up.severity) == ("medium", "critical")
    state = fold(events, state)
    assert state is not None and state.severity == "critical"
    lower = decide(LinkDetection(tid, det(2, priority=0), "low"), state, T0)
    assert [type(e).__name__ for e in lower] == ["DetectionAdded"]


def test_partial_config_keeps_other_values() -> None:
    c = apply_patch(
        DEFAULT_CONFIG, {"sla_config": {"high": {"mtta_minutes": 30}}, "auto_grouping_enabled": True}
    )
    assert c.sla_config["high"].mtta_minutes == 30 and c.sla_config["high"].mttr_minutes == 720
    assert c.sla_config["low"] == DEFAULT_CONFIG.sla_config["low"] and c.auto_grouping_enabled
    assert c.retention_days == 90 and c.grouping_window_minutes == 60 and c.grouping_max_detections == 1000
    [event] = decide_config("o", DEFAULT_CONFIG, c, T0)
    assert event.changed == ("sla_config", "auto_grouping_enabled") and event.old == DEFAULT_CONFIG
    assert decide_config("o", c, c, T0) == []


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"severity_mapping": {"high_min": 9}}, "severity_mapping"),
        ({"severity_mapping": {"critical_min": 11}}, "severity_mapping"),
        ({"severity_mapping": {"medium_min": -1}}, "severity_mapping"),
        ({"sla_config": {"high": {"mtta_minutes": 0}}}, "sla_config"),
        ({"sla_config": {"urgent": {"mtta_minutes": 5, "mttr_minutes": 9}}}, "sla_config"),
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 99999}, "retention_days"),
        ({"auto_close_resolved_after_days": -1}, "auto_close_resolved_after_days"),
        ({"grouping_window_minutes": 0}, "grouping_window_minutes"),
        ({"grouping_max_detections": 0}, "grouping_max_detections"),
        ({"grouping_key_fields": []}, "grouping_key_fields"),
        ({"grouping_key_fields": ["category", "category"]}, "grouping_key_fields"),
        ({"grouping_key_fields": ["colour"]}, "grouping_key_fields"),
        ({"auto_grouping_enabled": "yes"}, "auto_grouping_enabled"),
        ({"surprise": 1}, "surprise"),
        ({"severity_mapping": {"extra_min": 1}}, "severity_mapping.extra_min"),
        ({"webhook_url": "ftp://hooks.example/x"}, "webhook_url"),
        ({"webhook_url": "https://hooks.example/a b"}, "webhook_url"),
        ({"webhook_url": "https://hooks.example/" + "x" * 2048}, "webhook_url"),
        ({"webhook_url": 7}, "webhook_url"),
        (
            {"webhook_url": "http://[::1/x"},
            "webhook_url",
        ),  # the pattern lets it through; no client can use it
        ({"webhook_url": "https://:443/x"}, "webhook_url"),
        ({"extrahop": {"url": "http://[", "api_key_fingerprint": None}}, "extrahop"),
    ],
)
def test_invalid_configuration_names_the_field(patch: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidValue) as err:
        apply_patch(DEFAULT_CONFIG, patch)
    assert err.value.field.startswith(field), (err.value.field, str(err.value))


def test_a_webhook_is_set_and_removed_like_any_other_key() -> None:
    c = apply_patch(DEFAULT_CONFIG, {"webhook_url": "https://hooks.example/oid/adapter/secret?x=%20"})
    assert (
        c.webhook_url == "https://hooks.example/oid/adapter/secret?x=%20"
        and DEFAULT_CONFIG.webhook_url is None
    )
    assert apply_patch(c, {"retention_days": 30}).webhook_url == c.webhook_url
    assert apply_patch(c, {"webhook_url": None}).webhook_url is None


def test_defaults_are_the_seed_table() -> None:
    c = OrgConfig()
    assert (c.severity_mapping.critical_min, c.severity_mapping.high_min, c.severity_mapping.medium_min) == (
        8,
        5,
        3,
    )
    assert {s: (t.mtta_minutes, t.mttr_minutes) for s, t in c.sla_config.items()} == {
        "critical": (15, 240), "high": (15, 720), "medium": (60, 1440), "low": (100, 2800),
    }  # fmt: skip
    assert (c.retention_days, c.auto_close_resolved_after_days, c.auto_grouping_enabled) == (90, 7, False)
