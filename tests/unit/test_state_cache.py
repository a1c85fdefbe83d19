"""The handler's state cache stays within its weight (tickets plus their detections), dropping the
least recently used first."""

import uuid
from datetime import UTC, datetime

from domain.detections import Detection
from domain.linked_detections import LinkedDetections
from domain.ticket import TicketState
from services.commands.state_cache import StateCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def state(detections: int) -> TicketState:
    ds = LinkedDetections(
        Detection(str(i), "o", "c", "s", 3, "s1", "h", NOW, "limacharlie") for i in range(detections)
    )
    return TicketState(uuid.uuid4(), "o", 1, "low", NOW, NOW, detections=ds, version=1 + detections)


def test_least_recently_used_goes_first_when_over_weight() -> None:
    cache = StateCache(max_weight=10)
    a, b, c = state(3), state(3), state(3)  # weight 4 each
    for s in (a, b):
        cache.put(s, uuid.uuid4())
    assert cache.get(a.ticket_id) is not None  # a is now the most recently used
    cache.put(c, uuid.uuid4())  # 12 > 10: b goes
    assert cache.get(b.ticket_id) is None
    assert cache.get(a.ticket_id) is not None and cache.get(c.ticket_id) is not None
    assert len(cache) == 2


def test_replacing_an_entry_counts_its_weight_once() -> None:
    cache = StateCache(max_weight=10)
    s = state(3)
    last = uuid.uuid4()
    for _ in range(5):
        cache.put(s, uuid.uuid4())
    cache.put(s, last)
    other = state(4)  # 4 + 5 <= 10: both fit only if s counted once
    cache.put(other, uuid.uuid4())
    entry = cache.get(s.ticket_id)
    assert entry is not None and entry.last_event_id == last
    assert cache.get(other.ticket_id) is not None
    cache.drop(s.ticket_id)
    assert cache.get(s.ticket_id) is None and len(cache) == 1
