"""What an ExtraHop appliance is told about its detections (the seed's detection tracking).

Every ExtraHop detection a ticket holds is shown on the appliance with the seed's four ticket
fields, in ExtraHop's vocabulary. Whenever an event changes what those fields would say (the
ticket's status, assignee, classification or number), or links ExtraHop detections to a ticket,
each detection concerned gets the new fields. The events of one change (an analyst's PATCH
records `status_changed`, `acknowledged` and `assigned` together) are told as one. A merged
ticket says nothing more: its detections now belong to the ticket it was merged into, whose
`merged_from` event tells them so.
"""

from collections.abc import Iterable
from typing import Final, Literal

import msgspec

from domain import events as ev
from domain.detections import EXTRAHOP_SOURCE, Detection
from domain.events import TicketEvent
from domain.lifecycle import Status
from domain.ticket import TicketState

TrackingStatus = Literal["new", "acknowledged", "in_progress", "closed"]
Resolution = Literal["action_taken", "no_action_taken"]

STATUS: Final[dict[Status, TrackingStatus]] = {
    "new": "new",
    "acknowledged": "acknowledged",
    "in_progress": "in_progress",
    "escalated": "in_progress",
    "resolved": "closed",
    "closed": "closed",
}
# Only a closed ticket has a resolution; a pending classification leaves it null.
RESOLUTION: Final[dict[str, Resolution]] = {
    "true_positive": "action_taken",
    "false_positive": "no_action_taken",
}


class DetectionTracking(msgspec.Struct, frozen=True):
    """The body of the seed's `PATCH /api/v1/detections/{id}`."""

    ticket_id: str  # our ticket number: `$ticket_id` in the appliance's URL template
    status: TrackingStatus
    assignee: str | None
    resolution: Resolution | None


def tracking(state: TicketState) -> DetectionTracking | None:
    status = STATUS.get(state.status)
    if status is None:  # merged
        return None
    resolution = RESOLUTION.get(state.classification) if status == "closed" else None
    return DetectionTracking(str(state.ticket_number), status, state.assignee, resolution)


def linked_by(event: TicketEvent) -> tuple[Detection, ...]:
    """The detections an event links to its ticket."""
    if isinstance(event, ev.TicketCreated):
        return (event.detection,) if event.detection else ()
    if isinstance(event, ev.DetectionAdded):
        return (event.detection,)
    if isinstance(event, ev.MergedFrom):
        return event.detections
    return ()


def changes(
    before: TicketState | None, after: TicketState, linked: Iterable[Detection] = ()
) -> list[tuple[str, DetectionTracking]]:
    """The ExtraHop detections that have something new to tell after the events that turned
    `before` into `after` (and linked `linked`), each with what to tell it. A change of the
    ticket's fields goes to every ExtraHop detection it holds; linking costs only the linked ones."""
    now = tracking(after)
    if now is None:
        return []
    if before is None or tracking(before) != now:
        held: Iterable[Detection] = after.detections.values()
    else:
        held = (d for d in linked if d.detection_id in after.detections)
    ids = dict.fromkeys(d.detection_id for d in held if d.source_format == EXTRAHOP_SOURCE)
    return [(i, now) for i in ids]
