"""The envelope every stored event travels in: ticket events, configuration and org purges alike.

An event's `ts` is the writer's injected clock (the domain decided with it), its id is ordered by
the wall clock, its type is the struct's own tag, and its metadata names who asked
(the audit trail's `by`), why (correlation and causation), the org, the ticket number where there
is one, and the version of the event's document schema (see domain.schema).
"""

from typing import Any

import msgspec

from domain.events import AnyEvent, encode_event, event_type
from domain.schema import schema_version
from services.eventstore import postgres as store
from services.eventstore.event_ids import new_event_id


class CommandContext(msgspec.Struct, frozen=True):
    """Who asked and why; stored as event metadata (the audit trail's `by`)."""

    actor: str
    correlation_id: str | None = None
    causation_id: str | None = None
    # Where the detection was read (topic, partition, offset), which the dedup index keeps with
    # the claim. Not stored in the event.
    read_at: tuple[str, int, int] | None = None


def envelope(
    event: AnyEvent, ctx: CommandContext, oid: str, ticket_number: int | None = None
) -> store.NewEvent:
    kind = event_type(event)
    metadata: dict[str, Any] = {
        "actor": ctx.actor,
        "correlation_id": ctx.correlation_id,
        "causation_id": ctx.causation_id,
        "oid": oid,
    }
    if ticket_number is not None:
        metadata["ticket_number"] = ticket_number
    metadata["schema"] = schema_version(kind)
    # The id's time is the wall clock's, not the event's `ts` (the injected clock's): a batch's
    # events share one `ts`, and ids equal to the sub-millisecond would land on the store's
    # event_id index in random order, half-filling its pages, where the wall clock keeps them
    # appending at its right edge.
    return store.NewEvent(event_id=new_event_id(), type=kind, data=encode_event(event), metadata=metadata)
