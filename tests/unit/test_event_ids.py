"""Event ids are distinct version 7 UUIDs that grow with time, also across a fork."""

import os
import time
import uuid

from services.eventstore.event_ids import new_event_id


def test_ids_are_distinct_version_7_uuids_across_many_pool_reads() -> None:
    ids = [new_event_id() for _ in range(10_000)]  # ~20 reads of the pool
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}


def test_ids_carry_their_time_and_grow_with_it() -> None:
    """The time-ordered prefix is what keeps the store's event_id index appending at its right edge."""
    before = time.time_ns() // 1_000_000
    ids = [new_event_id() for _ in range(2_000)]
    after = time.time_ns() // 1_000_000
    assert all(before <= i.int >> 80 <= after for i in ids)
    prefixes = [i.int >> 64 for i in ids]  # milliseconds, version and sub-millisecond time
    assert prefixes == sorted(prefixes)
    assert len(set(prefixes)) > 1  # the sub-millisecond bits move, not only the milliseconds
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == len(ids)  # and the random tail differs


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_event_id()  # the pool now holds ids a child would inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.write(write, new_event_id().bytes)
        os._exit(0)
    os.close(write)
    child = uuid.UUID(bytes=os.read(read, 16))
    os.close(read)
    os.waitpid(pid, 0)
    assert child.int & ((1 << 62) - 1) != new_event_id().int & ((1 << 62) - 1)
