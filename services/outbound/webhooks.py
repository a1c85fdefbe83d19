"""Webhook notifications: every ticket event of an org that set a `webhook_url`, POSTed to it.

The seed's extension sends its webhooks, gzip-compressed, to the org's webhook endpoint; here they
follow the event store like the `ticket-events` topic and carry the same message (`action`,
`ticket_id`, `ticket_number`, `oid`, `by`, `ts`, `metadata`, plus `event_id`, `version`,
`position`, `ticket_url`), gzipped, with `Content-Encoding: gzip`. Delivered as every outbound
request is (see deliveries): each ticket's events in order.
"""

import gzip

from services.delivery.queue import WEBHOOK, Target, webhook_targets
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.kafka.messages import NOT_TICKET_EVENTS, encode_message, to_message
from services.outbound.deliveries import Channel, Queued, Request

WEBHOOKS_NAME = "webhooks"


class Webhooks(Channel):
    name = WEBHOOK
    checkpoint = WEBHOOKS_NAME

    def __init__(self, ticket_url_template: str | None = None) -> None:
        self.ticket_url_template = ticket_url_template

    async def queue(self, conn: db.Connection, events: list[RecordedEvent]) -> list[Queued]:
        by_org: dict[str, list[RecordedEvent]] = {}
        for e in events:
            oid = e.metadata.get("oid")
            if e.type not in NOT_TICKET_EVENTS and isinstance(oid, str):
                by_org.setdefault(oid, []).append(e)
        if not by_org:
            return []
        hooked = await self.targets(conn, list(by_org))
        return [
            Queued(o, e.position, str(e.stream_id), e.event_id, self._body(e))
            for o in sorted(hooked)
            for e in by_org[o]
        ]

    def _body(self, event: RecordedEvent) -> bytes:
        return gzip.compress(encode_message(to_message(event, self.ticket_url_template)))

    async def targets(self, conn: db.Connection, oids: list[str]) -> dict[str, Target]:
        return await webhook_targets(conn, oids)

    def request(self, target: Target, row: Queued) -> Request:
        headers = {
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
            "X-Ticketing-Event-Id": str(row.event_id),
        }
        return Request("POST", target.url, headers, row.body, f"webhook {row.event_id}")
