"""The `ticket-events` message: what subscribers of the topic, the orgs' webhooks and the API's live
stream receive of each ticket event, in one shape."""

from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec

from domain.events import decode_event, event_details
from domain.ticket_links import render_ticket_url
from services.eventstore.postgres import RecordedEvent
from services.kafka.topics import MAX_MESSAGE_BYTES

# Audited in the store, not news for subscribers: configuration changes and suppressions (which
# exist to keep what they hold from reaching anyone).
UNPUBLISHED = frozenset(
    {"config_updated", "suppression_created", "suppression_ended", "detections_suppressed"}
)
# Published, but not events of a ticket: an org's purge (its tickets are gone, nothing to deliver)
# and its re-subscription.
NOT_TICKET_EVENTS = UNPUBLISHED | {"org_purged", "org_resubscribed"}
SCHEMA = "ticket-event/1"


class TicketEventMessage(msgspec.Struct, frozen=True):
    """Value of a `ticket-events` message (the seed's webhook fields, plus ordering and ids)."""

    schema: str
    event_id: UUID
    action: str
    ticket_id: UUID
    ticket_number: int | None
    oid: str | None
    by: str | None
    ts: datetime
    metadata: dict[str, Any]
    version: int
    position: int
    correlation_id: str | None = None
    causation_id: str | None = None
    ticket_url: str | None = None  # the ticket's page (settings' ticket_url_template)


_encoder = msgspec.json.Encoder()


def to_message(event: RecordedEvent, ticket_url_template: str | None = None) -> TicketEventMessage:
    body = decode_event(event.data, event.type, event.schema)
    meta = event.metadata
    number, oid = meta.get("ticket_number"), meta.get("oid")
    ticket_url = (
        render_ticket_url(ticket_url_template, str(number), oid)
        if ticket_url_template and number is not None and isinstance(oid, str)
        else None
    )
    return TicketEventMessage(
        schema=SCHEMA,
        event_id=event.event_id,
        action=event.type,
        ticket_id=event.stream_id,
        ticket_number=number,
        oid=oid,
        by=meta.get("actor"),
        ts=body.ts,
        metadata=event_details(body),
        version=event.version,
        position=event.position,
        correlation_id=meta.get("correlation_id"),
        causation_id=meta.get("causation_id"),
        ticket_url=ticket_url,
    )


def encode_message(message: TicketEventMessage) -> bytes:
    """The message as JSON, never larger than MAX_MESSAGE_BYTES.

    A `merged_from` event lists every detection of the merged ticket; a grouped ticket that took in
    merges can hold thousands, and one message over the broker's limit stopped the relay at that
    event for good. Its list is cut to what fits, `detections_total` and `detections_truncated`
    say so, and the whole list stays in the ticket's history (the API's timeline).
    """
    raw = _encoder.encode(message)
    detections = message.metadata.get("detections")
    if not isinstance(detections, list | tuple):
        return raw
    keep = len(detections)
    while len(raw) > MAX_MESSAGE_BYTES and keep:
        keep //= 2
        metadata = {
            **message.metadata,
            "detections": list(detections[:keep]),
            "detections_total": len(detections),
            "detections_truncated": True,
        }
        raw = _encoder.encode(msgspec.structs.replace(message, metadata=metadata))
    return raw
