import uuid
from datetime import UTC, datetime

import msgspec
from aiokafka.partitioner import DefaultPartitioner

from domain.detections import Detection
from domain.events import MergedFrom, TicketCreated, encode_event
from services.eventstore.postgres import RecordedEvent
from services.kafka.messages import TicketEventMessage, encode_message, to_message
from services.kafka.topics import MAX_MESSAGE_BYTES
from services.outbound.relay import partition_of


def test_envelope_carries_the_seed_webhook_fields() -> None:
    tid, eid = uuid.uuid4(), uuid.uuid4()
    ts = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    event = TicketCreated(ts=ts, ticket_id=tid, oid="org", ticket_number=12, severity="high")
    recorded = RecordedEvent(
        position=99,
        event_id=eid,
        stream_id=tid,
        version=1,
        type="created",
        data=encode_event(event).decode(),
        metadata={"actor": "alice@example.com", "oid": "org", "ticket_number": 12, "correlation_id": "c"},
        recorded_at=datetime(2026, 2, 3, 4, 5, 7, tzinfo=UTC),
    )
    wire = msgspec.json.decode(encode_message(to_message(recorded)))
    assert wire["action"] == "created"
    assert wire["ticket_id"] == str(tid)
    assert wire["ticket_number"] == 12
    assert wire["oid"] == "org"
    assert wire["by"] == "alice@example.com"
    assert wire["ts"] == "2026-02-03T04:05:06Z"
    assert wire["metadata"] == {
        "ticket_id": str(tid), "oid": "org", "ticket_number": 12, "severity": "high", "detection": None,
        "group_key": None, "continues_ticket_id": None, "grouping": None, "related_ticket_id": None,
        "related_ticket_number": None,
    }  # fmt: skip
    assert (wire["event_id"], wire["version"], wire["position"]) == (str(eid), 1, 99)
    assert wire["schema"] == "ticket-event/1"
    assert msgspec.json.decode(encode_message(to_message(recorded)), type=TicketEventMessage).ticket_id == tid


def merged(detections: int) -> RecordedEvent:
    ts = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)
    ds = tuple(
        Detection(f"det-{i:06d}-{uuid.UUID(int=i)}", "org", "lateral_movement_psexec", "dr-general", 7,
                  str(uuid.UUID(int=i)), f"host-{i}.corp.example", ts, "limacharlie")
        for i in range(detections)
    )  # fmt: skip
    event = MergedFrom(ts=ts, source_ticket_id=uuid.uuid4(), source_ticket_number=7, detections=ds)
    return RecordedEvent(
        position=1, event_id=uuid.uuid4(), stream_id=uuid.uuid4(), version=9, type="merged_from",
        data=encode_event(event).decode(), metadata={"actor": "a@x", "oid": "org", "ticket_number": 3}, recorded_at=ts,
    )  # fmt: skip


def test_a_merge_of_thousands_of_detections_is_cut_to_fit_one_message_and_says_so() -> None:
    """Over the broker's limit, the message stopped the relay at its event for good."""
    big = merged(6000)
    assert len(big.data) > 1.5 * MAX_MESSAGE_BYTES
    raw = encode_message(to_message(big))
    assert len(raw) <= MAX_MESSAGE_BYTES
    meta = msgspec.json.decode(raw)["metadata"]
    assert meta["detections_total"] == 6000 and meta["detections_truncated"] is True
    assert 1000 < len(meta["detections"]) < 6000
    assert [d["detection_id"] for d in meta["detections"][:2]] == [
        f"det-00000{i}-{uuid.UUID(int=i)}" for i in range(2)
    ]  # the first ones, in order
    small = msgspec.json.decode(encode_message(to_message(merged(50))))["metadata"]
    assert len(small["detections"]) == 50 and "detections_truncated" not in small


def test_the_relay_partitions_as_every_kafka_client_does() -> None:
    """Java's murmur2 (aiokafka's default), remembered per key: a ticket's events share a partition
    with what any other client would pick for its key."""
    partitions = list(range(12))
    for key in (b"", b"a", str(uuid.uuid4()).encode(), str(uuid.uuid4()).encode()):
        for _ in range(2):  # computed, then remembered
            assert partition_of(key, partitions, partitions) == DefaultPartitioner()(
                key, partitions, partitions
            )
    assert partition_of(None, partitions, [3]) == 3  # no key: an available partition
    # the Java client's own test vectors (org.apache.kafka.common.utils.UtilsTest.testMurmur2)
    for key, java in ((b"21", -973932308), (b"foobar", -790332482), (b"abc", 479470107)):
        assert partition_of(key, partitions, partitions) == (java & 0x7FFFFFFF) % 12
