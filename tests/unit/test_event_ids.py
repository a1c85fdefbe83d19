"""Event ids cut from a pool of randomness are still distinct random UUIDs, also across a fork."""

import os
import uuid

from services.event_ids import new_event_id


def test_ids_are_distinct_version_4_uuids_across_many_pool_reads() -> None:
    ids = [new_event_id() for _ in range(10_000)]  # ~40 reads of the pool
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4} and {i.variant for i in ids} == {uuid.RFC_4122}


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
    assert child != new_event_id()
