import base64
import gzip
import json
import random
from datetime import UTC, datetime

import msgspec

from services.ingest.pipeline import DeadLetter, RawRecord, org_from_key, parse_batch
from services.kafka.topics import MAX_MESSAGE_BYTES

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
    letters = [msgspec.json.decode(r.letter, type=DeadLetter) for r in bad]
    assert [dl.source.offset for dl in letters] == [2, 4, 5]
    first = letters[0]
    assert first.value_b64 is not None and base64.b64decode(first.value_b64) == raw_bad  # exactly
    assert first.value is None  # not UTF-8, so no text copy
    assert first.key == "k"
    assert first.source.topic == "detections" and first.source.partition == 2
    assert "not valid JSON" in first.error
    assert "no org" in letters[1].error
    assert letters[1].value == json.dumps(EH)
    assert "empty message" in letters[2].error
    assert [r.key for r in bad] == [b"k", None, None]
    assert [r.kind for r in bad] == ["not_json", "no_org", "empty"]


def test_default_org_applies_to_extrahop_without_a_key() -> None:
    good, bad = parse_batch([record(json.dumps(EH).encode())], default_oid="fallback", arrival=NOW)
    assert not bad
    assert good[0][0].oid == "fallback"


def test_a_dead_letter_never_outweighs_a_message() -> None:
    """A 600 KB malformed detection made a 1.4 MB letter, which the producer refused: the batch
    failed on every re-delivery. Larger originals lose the text copy, then travel gzipped."""
    noise = random.Random(3).randbytes
    json_like = b'{"detect_id": 1, "junk": "' + b"x" * 600_000 + b'"}'  # compresses well
    for value, carried in ((b"{oops", "value"), (json_like, "value_b64"), (b"[" + b"7," * 450_000 + b"]", "gzip"),
                           (noise(900_000), "none")):  # fmt: skip
        [(_, letter, _)] = parse_batch([record(value, offset=9)], default_oid=None, arrival=NOW)[1]
        assert len(letter) <= MAX_MESSAGE_BYTES, carried
        dl = msgspec.json.decode(letter, type=DeadLetter)
        assert dl.error and dl.source.offset == 9
        if carried == "value":
            assert dl.value == value.decode() and dl.value_bytes is None
        elif carried == "value_b64":
            assert dl.value is None and dl.value_b64 and base64.b64decode(dl.value_b64) == value
        elif carried == "gzip":
            assert dl.value_b64 is None and dl.value_gzip_b64
            assert gzip.decompress(base64.b64decode(dl.value_gzip_b64)) == value
        else:
            assert (dl.value, dl.value_b64, dl.value_gzip_b64) == (None, None, None)
        assert dl.value_bytes == (None if carried == "value" else len(value))
