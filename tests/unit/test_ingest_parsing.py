import base64
import json
from datetime import UTC, datetime

import msgspec

from services.ingest.pipeline import DeadLetter, RawRecord, org_from_key, parse_batch

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LC = {"detect_id": "d1", "cat": "c", "routing": {"oid": "org-a", "sid": "s"}}
EH = {"id": 5, "type": "t", "riskScore": 50}


def record(value: bytes | None, key: bytes | None = None, offset: int = 0) -> RawRecord:
    return RawRecord(topic="detections", partition=2, offset=offset, key=key, value=value, timestamp_ms=123)


def test_org_is_the_key_up_to_the_first_slash() -> None:
    assert org_from_key(b"org-a/cat/sensor") == "org-a"
    assert org_from_key(b"org-a") == "org-a"
    assert org_from_key(b"") is None
    assert org_from_key(None) is None
    assert org_from_key(b"\xff\xfe") is None


def test_good_and_bad_messages_are_separated() -> None:
    raw_bad = b"\xff not json"
    good, bad = parse_batch(
        [
            record(json.dumps(LC).encode(), offset=1),
            record(raw_bad, key=b"k", offset=2),
            record(json.dumps(EH).encode(), key=b"org-b/t/host", offset=3),
            record(json.dumps(EH).encode(), offset=4),
            record(None, offset=5),
        ],
        default_oid=None,
        arrival=NOW,
    )
    assert [(d.oid, d.detection_id, r.offset) for d, r in good] == [("org-a", "d1", 1), ("org-b", "5", 3)]
    letters = [msgspec.json.decode(v, type=DeadLetter) for _, v in bad]
    assert [dl.source.offset for dl in letters] == [2, 4, 5]
    first = letters[0]
    assert base64.b64decode(first.value_b64) == raw_bad  # the original bytes, exactly
    assert first.value is None  # not UTF-8, so no text copy
    assert first.key == "k"
    assert first.source.topic == "detections" and first.source.partition == 2
    assert "not valid JSON" in first.error
    assert "no org" in letters[1].error
    assert letters[1].value == json.dumps(EH)
    assert "empty message" in letters[2].error
    assert [k for k, _ in bad] == [b"k", None, None]


def test_default_org_applies_to_extrahop_without_a_key() -> None:
    good, bad = parse_batch([record(json.dumps(EH).encode())], default_oid="fallback", arrival=NOW)
    assert not bad
    assert good[0][0].oid == "fallback"
