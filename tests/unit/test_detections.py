import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.detections import Detection, detection_tags, extrahop_priority, parse_detection
from domain.errors import DetectionFormatError
from domain.limits import nul_at

ARRIVAL = datetime(2026, 1, 1, tzinfo=UTC)

LC: dict[str, Any] = {
    "detect_id": "9a1c2f4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b",
    "cat": "lateral_movement_psexec",
    "source": "dr-general",
    "namespace": "general",
    "priority": 7,
    "ts": 1763800000000,
    "routing": {
        "oid": "8cbe27f4-bfa1-4afb-ba19-138cd51389cd",
        "sid": "550e8400-e29b-41d4-a716-446655440000",
        "hostname": "DESKTOP-001",
        "event_type": "NEW_PROCESS",
        "event_time": 1763799999000,
    },
    "detect": {"event": {"COMMAND_LINE": "psexec.exe"}},
}

EH: dict[str, Any] = {
    "id": 4437,
    "title": "Suspicious CIFS Client File Share Access",
    "type": "cifs_suspicious_share_access",
    "categories": ["sec.lateral"],
    "riskScore": 83,
    "startTime": 1763796400000,
    "endTime": 1763800000000,
    "participants": [
        {
            "role": "offender",
            "object_type": "device",
            "hostname": "AccountingLaptop",
            "ipaddr": "192.168.6.20",
        },
        {
            "role": "victim",
            "object_type": "device",
            "hostname": "corpshare.example.com",
            "ipaddr": "192.168.6.179",
        },
    ],
    "ticketId": None,
}


def parse(doc: object, key_oid: str | None = None) -> Detection:
    return parse_detection(json.dumps(doc).encode(), key_oid=key_oid, arrival=ARRIVAL)


def test_limacharlie_mapping() -> None:
    d = parse(LC)
    assert d.detection_id == LC["detect_id"]
    assert d.oid == "8cbe27f4-bfa1-4afb-ba19-138cd51389cd"
    assert d.detection_cat == "lateral_movement_psexec"
    assert d.detection_source == "dr-general"
    assert d.detection_priority == 7
    assert d.sensor_id == "550e8400-e29b-41d4-a716-446655440000"
    assert d.hostname == "DESKTOP-001"
    assert d.detected_at == datetime(2025, 11, 22, 8, 26, 40, tzinfo=UTC)
    assert d.source_format == "limacharlie"


def test_limacharlie_org_comes_from_routing_not_the_key() -> None:
    assert parse(LC, key_oid="other-org").oid == LC["routing"]["oid"]


def test_limacharlie_time_falls_back_to_event_time_then_arrival() -> None:
    no_ts = {k: v for k, v in LC.items() if k != "ts"}
    assert parse(no_ts).detected_at == datetime.fromtimestamp(1763799999, tz=UTC)
    no_times = {**no_ts, "routing": {"oid": "o"}}
    assert parse(no_times).detected_at == ARRIVAL


def test_limacharlie_source_falls_back_to_namespace() -> None:
    assert parse({**LC, "source": None}).detection_source == "general"


def test_extrahop_mapping() -> None:
    d = parse(EH, key_oid="org-7")
    assert d.detection_id == "4437"
    assert d.oid == "org-7"
    assert d.detection_cat == "cifs_suspicious_share_access"
    assert d.detection_source == "extrahop"
    assert d.detection_priority == 8
    assert d.hostname == "AccountingLaptop"
    assert d.sensor_id == "192.168.6.20"
    assert d.detected_at == datetime.fromtimestamp(1763796400, tz=UTC)
    assert d.source_format == "extrahop"


@pytest.mark.parametrize(("risk", "priority"), [(0, 0), (4, 0), (5, 1), (49, 5), (83, 8), (94, 9), (99, 10)])
def test_extrahop_risk_scales_onto_priority(risk: int, priority: int) -> None:
    assert extrahop_priority(risk) == priority


def test_extrahop_without_org_is_rejected() -> None:
    with pytest.raises(DetectionFormatError, match="no org"):
        parse(EH)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object, got list"),
        (b'{"hello": "world"}', "unrecognised detection"),
        (json.dumps({**LC, "priority": 11}).encode(), r"\$\.priority"),
        (json.dumps({**LC, "priority": "high"}).encode(), r"Expected `int`, got `str` - at `\$\.priority`"),
        (json.dumps({k: v for k, v in LC.items() if k != "cat"}).encode(), "`cat`"),
        (json.dumps({**LC, "detect_id": ""}).encode(), r"\$\.detect_id"),
        (json.dumps({**LC, "ts": 1763800000}).encode(), "epoch milliseconds"),
        (json.dumps({**EH, "riskScore": 100}).encode(), r"\$\.riskScore"),
        (json.dumps({**EH, "id": "abc"}).encode(), r"\$\.id"),
        (json.dumps({**LC, "cat": "a\u0000b"}).encode(), r"detection_cat holds a NUL character"),
        (b"[" * 5000 + b"]" * 5000, "nests deeper"),  # was a RecursionError: the worker's batch failed
        (b'{"detect_id": "x", "detect": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nests deeper"),
        (
            json.dumps({**LC, "routing": {**LC["routing"], "hostname": "\u0000"}}).encode(),
            "hostname holds a NUL",
        ),
    ],
)
def test_invalid_messages_are_rejected_with_a_precise_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(DetectionFormatError, match=reason):
        parse_detection(payload, key_oid="org", arrival=ARRIVAL)


def test_a_limacharlie_detection_without_routing_oid_takes_the_key_s_org_or_has_none() -> None:
    trimmed = json.dumps({**LC, "routing": {"sid": "x"}}).encode()
    assert parse_detection(trimmed, key_oid="org-from-key", arrival=ARRIVAL).oid == "org-from-key"
    with pytest.raises(DetectionFormatError, match="no org") as refused:
        parse_detection(trimmed, key_oid=None, arrival=ARRIVAL)
    assert refused.value.kind == "no_org"
    assert (
        parse_detection(json.dumps(LC).encode(), key_oid="other", arrival=ARRIVAL).oid == LC["routing"]["oid"]
    )


def test_the_org_from_the_message_key_is_checked_like_one_in_the_detection() -> None:
    """An ExtraHop detection's org comes from the key, which no wire type checks: a NUL or a
    10,000-character org was refused only by the database."""
    with pytest.raises(DetectionFormatError, match="oid holds a NUL"):
        parse(EH, key_oid="org\x00b")
    with pytest.raises(DetectionFormatError, match="longer than 256"):
        parse(EH, key_oid="o" * 10_000)
    assert parse(LC, key_oid="org\x00b").oid == LC["routing"]["oid"]  # a LimaCharlie one names its own


def test_a_nul_character_where_nothing_is_stored_is_no_reason_to_refuse() -> None:
    d = parse({**LC, "detect": {"command_line": "a\u0000b"}})
    assert d == parse(LC)


def test_the_typed_fast_path_parses_exactly_as_the_general_one() -> None:
    """Well-formed detections are decoded straight into their wire shape; the general path (a dict,
    then a conversion) stays the reference, and explains whatever the fast path declines."""
    from domain.detections import _typed, _untyped
    from services.devstack.samples import generate

    docs = [*generate("org-s", 400), {**EH, "description": 'mentions "detect_id" in passing'},
            {**EH, "extra": {"detect_id": "a nested key"}},
            {**LC, "ts": None}, {k: v for k, v in LC.items() if k != "source"}]  # fmt: skip
    for doc in docs:
        payload = json.dumps(doc).encode()
        fast = _typed(payload, "org-k", ARRIVAL)
        assert fast is not None, doc
        assert fast == _untyped(payload, "org-k", ARRIVAL)
    declined: list[object] = [
        {**LC, "priority": 11},
        {**EH, "riskScore": "high"},
        {"routing": {"oid": "o"}},
        [1],
    ]
    for other in declined:
        assert _typed(json.dumps(other).encode(), "org-k", ARRIVAL) is None  # left to the general path


_json = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40) | st.sampled_from(["\x00", "a\x00", "x" * 1100, "0", "1763800000000"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip


def _mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The detection with one field (top level or under routing/participants) replaced or removed."""
    top = st.sampled_from(sorted(base))
    return st.tuples(top, _json, st.booleans()).map(
        lambda t: {k: v for k, v in base.items() if k != t[0]} if t[2] else {**base, t[0]: t[1]}
    )


@settings(max_examples=400, deadline=None)
@given(doc=_mutated(LC) | _mutated(EH) | _mutated({**LC, "routing": {"oid": "o", "sid": "s"}}) | _json,
       key_oid=st.none() | st.sampled_from(["org", "o\x00", "o" * 300]))  # fmt: skip
def test_any_message_is_a_storable_detection_or_a_format_error(doc: object, key_oid: str | None) -> None:
    """Anything else raised, or an unstorable detection returned, failed the worker's batch on every
    re-delivery and stopped its partition."""
    payload = json.dumps(doc).encode()
    try:
        d = parse_detection(payload, key_oid=key_oid, arrival=ARRIVAL)
    except DetectionFormatError:
        return
    assert nul_at(d) is None
    assert 0 < len(d.detection_id) <= 256 and 0 < len(d.oid) <= 256
    assert all(len(x) <= 1024 for x in (d.detection_cat, d.detection_source, d.sensor_id, d.hostname))
    assert 0 <= d.detection_priority <= 10
    assert d.detected_at == ARRIVAL or datetime(2000, 1, 1, tzinfo=UTC) <= d.detected_at <= datetime(
        2200, 1, 1, tzinfo=UTC
    )


def test_an_extrahop_detections_categories_and_mitre_ids_become_its_tags() -> None:

    assert detection_tags(
        ["sec.lateral", "SEC.LATERAL", " T1021 ", "ta\x000008", "été", 7, True, None, "x" * 200]
    ) == (
        "sec.lateral",
        "T1021",
        "ta0008",
        "7",
        "x" * 128,
    )
    d = parse_detection(
        b'{"id": 1, "type": "t", "riskScore": 50, "title": " Odd ", "description": "d",'
        b' "categories": ["sec.a"], "mitreTactics": ["TA1"], "mitreTechniques": ["T1"]}',
        key_oid="o",
        arrival=ARRIVAL,
    )
    assert (d.title, d.description, d.tags) == ("Odd", "d", ("sec.a", "TA1", "T1"))
