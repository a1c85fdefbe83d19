"""Event ids: time-ordered (version 7, RFC 9562) UUIDs, their random bits cut from one read of the
OS's randomness per 512 ids.

Time-ordered because the event store keeps a unique index on `event_id` for as long as it lives:
random ids land on a random leaf of an index that outgrows memory, and after every checkpoint each
leaf they touch is written to the WAL whole. Ids that grow with time append at the index's right
edge. The 12 bits after the milliseconds hold the sub-millisecond time (the standard's "increased
clock precision" method), the last 62 are random, so ids stay unique across processes and clock
steps.

`uuid.uuid4()` asks the kernel for 16 bytes per id, a system call per event on the ingest
worker's busiest loop; hence the pool (figures in docs/benchmarks.md).
"""

import os
import time
from uuid import UUID

_IDS_PER_READ = 512
_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_B = (1 << 62) - 1


class _Randomness:
    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.pool, self.at = b"", 0

    def take8(self) -> int:
        if self.at >= len(self.pool):
            self.pool, self.at = os.urandom(8 * _IDS_PER_READ), 0
        self.at += 8
        return int.from_bytes(self.pool[self.at - 8 : self.at])


_randomness = _Randomness()
# a forked child must not hand out the ids its parent also has in its pool
os.register_at_fork(after_in_child=_randomness.clear)


def new_event_id() -> UUID:
    ms, ns = divmod(time.time_ns(), 1_000_000)
    sub_ms = ns * 4096 // 1_000_000
    return UUID(int=ms << 80 | _VERSION_7 | sub_ms << 64 | _VARIANT_RFC | _randomness.take8() & _RAND_B)
