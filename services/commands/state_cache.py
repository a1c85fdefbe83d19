"""Ticket states the command handler has seen, so that a command reads only the newer events.

A grouped ticket collects detections batch after batch; folding its whole stream for every batch
made each batch's cost grow with the ticket's history. An entry is a state and the id of the last
event folded into it. It is trusted only when the store still holds that very event at that
version (checked in the same read that fetches the newer events), so a rolled-back or competing
append costs a full read of the stream, never a wrong state.
"""

from collections import OrderedDict
from typing import NamedTuple
from uuid import UUID

from domain.ticket import TicketState


class Cached(NamedTuple):
    state: TicketState
    last_event_id: UUID


class StateCache:
    """Least recently used first out, bounded by tickets plus the detections they hold."""

    def __init__(self, max_weight: int = 50_000) -> None:
        self._entries: OrderedDict[UUID, Cached] = OrderedDict()
        self._weight = 0
        self._max = max_weight

    def get(self, stream_id: UUID) -> Cached | None:
        entry = self._entries.get(stream_id)
        if entry is not None:
            self._entries.move_to_end(stream_id)
        return entry

    def put(self, state: TicketState, last_event_id: UUID) -> None:
        self.drop(state.ticket_id)
        self._entries[state.ticket_id] = Cached(state, last_event_id)
        self._weight += _weight(state)
        while self._weight > self._max and self._entries:
            _, evicted = self._entries.popitem(last=False)
            self._weight -= _weight(evicted.state)

    def drop(self, stream_id: UUID) -> None:
        entry = self._entries.pop(stream_id, None)
        if entry is not None:
            self._weight -= _weight(entry.state)

    def __len__(self) -> int:
        return len(self._entries)


def _weight(state: TicketState) -> int:
    return 1 + len(state.detections)
