"""Detection tracking on the org's ExtraHop appliance (the seed's `PATCH /api/v1/detections/{id}`).

For an org whose `extrahop` target is enabled, every ticket event is folded into its ticket's
state and each ExtraHop detection whose tracking fields it changes (domain.detection_tracking)
gets a PATCH of the seed's body, with `Authorization: ExtraHop apikey=<the org's key>`. Queued
and delivered as every outbound request is (see deliveries), each detection's updates in order,
also when a merge moves it to another ticket. The appliance answering 404 does not know the
detection (it came from another appliance, or was deleted there): that one is skipped.
"""

import urllib.parse
from uuid import UUID

import msgspec

from domain.detection_tracking import changes, linked_by
from domain.events import TicketEvent, decode_ticket_event
from domain.ticket import fold
from services.commands.configs import load_configs
from services.commands.repository import states_before
from services.commands.state_cache import StateCache
from services.delivery.queue import EXTRAHOP, Target, extrahop_targets
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.kafka.messages import NOT_TICKET_EVENTS
from services.outbound.deliveries import REFUSED, Channel, Queued, Request

EXTRAHOP_NAME = EXTRAHOP  # its subscription's name
_encoder = msgspec.json.Encoder()


Decoded = tuple[RecordedEvent, TicketEvent]


def _changes(stream: list[Decoded]) -> list[list[Decoded]]:
    """A ticket's events cut into changes: the events one command recorded share their time and
    correlation id, and are told to the appliance as one."""
    out: list[list[Decoded]] = []
    for pair in stream:
        if out and _change_of(out[-1][-1]) == _change_of(pair):
            out[-1].append(pair)
        else:
            out.append([pair])
    return out


def _change_of(pair: Decoded) -> tuple[object, ...]:
    e, event = pair
    return (e.metadata.get("correlation_id"), e.metadata.get("actor"), event.ts)


class ExtraHopTracking(Channel):
    name = EXTRAHOP_NAME
    checkpoint = EXTRAHOP_NAME
    refused = REFUSED | {404}

    def __init__(self, cache: StateCache | None = None) -> None:
        self.cache = cache if cache is not None else StateCache(max_weight=20_000)

    async def queue(self, conn: db.Connection, events: list[RecordedEvent]) -> list[Queued]:
        ticket_events = [
            e for e in events if e.type not in NOT_TICKET_EVENTS and isinstance(e.metadata.get("oid"), str)
        ]
        if not ticket_events:
            return []
        configs = await load_configs(conn, {e.metadata["oid"] for e in ticket_events})
        tracked = {o for o, c in configs.items() if c.extrahop is not None and c.extrahop.enabled}
        by_stream: dict[UUID, list[RecordedEvent]] = {}
        for e in ticket_events:
            if e.metadata["oid"] in tracked:
                by_stream.setdefault(e.stream_id, []).append(e)
        if not by_stream:
            return []
        states = await states_before(
            conn, {sid: evs[0].version for sid, evs in by_stream.items()}, self.cache
        )
        rows: list[Queued] = []
        for sid, stream in by_stream.items():
            state = states[sid]
            for change in _changes([(e, decode_ticket_event(e.data, e.type, e.schema)) for e in stream]):
                decoded = [event for _, event in change]
                after = fold(decoded, state)
                assert after is not None
                last = change[-1][0]
                linked = [d for event in decoded for d in linked_by(event)]
                rows += [
                    Queued(after.oid, last.position, detection_id, last.event_id, _encoder.encode(tracking))
                    for detection_id, tracking in changes(state, after, linked)
                ]
                state = after
            if state is not None:
                self.cache.put(state, stream[-1].event_id)
        return rows

    async def targets(self, conn: db.Connection, oids: list[str]) -> dict[str, Target]:
        return await extrahop_targets(conn, oids)

    def request(self, target: Target, row: Queued) -> Request:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"ExtraHop apikey={target.secret}",
            "X-Ticketing-Event-Id": str(row.event_id),
        }
        url = f"{target.url}/api/v1/detections/{urllib.parse.quote(row.subject, safe='')}"
        return Request("PATCH", url, headers, row.body, f"extrahop {row.subject} {row.event_id}")
