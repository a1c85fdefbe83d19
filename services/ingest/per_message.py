"""What faust does for every message that this worker has no use for, made to cost nothing.

The worker's event loop is its bottleneck (py-spy, 200,000 detections: busy 96% of the time), and
of that time faust spent 6% decoding each key and value through its codec registry, which for the
raw serializer returns the bytes it was given, and 4% in the Monitor sensor counting each message
for a web view this worker does not serve (`web_enabled=False`). Without both, faust's ceiling
(the bench's count-only worker) went from 18.4-19.0k to 20.6-23.0k messages/s.
"""

from typing import Any

import faust
from faust.sensors import Monitor
from faust.types import AppT, EventT, StreamT
from faust.types.tuples import TP, Message


class BytesSchema(faust.Schema[bytes, bytes]):
    """Keys and values stay the bytes the broker delivered: the batch parses them (and dead-letters
    what it cannot read), so there is nothing to decode here."""

    def loads_key(self, app: AppT, message: Message, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: AppT, message: Message, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.value


class UncountedMonitor(Monitor):
    """faust's Monitor without its per-message counters and timings (rebalances, commits and sends
    are still recorded); they feed only faust's web view."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]) -> None:
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[Any, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None
