import uuid
from datetime import UTC, datetime

import msgspec

from domain.events import TicketCreated, encode_event
from services.eventstore.postgres import RecordedEvent
from services.relay import TicketEventMessage, encode_message, to_message


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
        "group_key": None, "continues_ticket_id": None,
    }  # fmt: skip
    assert (wire["event_id"], wire["version"], wire["position"]) == (str(eid), 1, 99)
    assert wire["schema"] == "ticket-event/1"
    assert msgspec.json.decode(encode_message(to_message(recorded)), type=TicketEventMessage).ticket_id == tid
