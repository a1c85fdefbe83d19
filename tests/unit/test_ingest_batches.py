"""Group commit: what gathered while the writer was busy goes at once; an idle writer lets a
trickle linger briefly; a full batch waits for the writer and holds the stream back; with two
writers, each partition keeps its order and is acked after its own commit."""

import asyncio

from faust.types.tuples import Message

from services.ingest.batches import Batches, consume_in_batches
from tests.unit.test_ingest_per_message import app, event, stream_of


async def test_what_gathered_goes_at_once_in_order() -> None:
    b: Batches[int] = Batches(size=10, within_s=60)
    for i in range(3):
        await b.put(i)
    assert await asyncio.wait_for(b.take(), 1) == [0, 1, 2]  # no linger: the writer was busy


async def test_an_idle_writer_lets_the_first_item_linger_for_company() -> None:
    b: Batches[str] = Batches(size=10, within_s=0.2)
    taking = asyncio.create_task(b.take())
    await asyncio.sleep(0)  # the writer is waiting on an empty batch
    await b.put("a")
    await asyncio.sleep(0.05)
    assert not taking.done()
    await b.put("b")
    assert await asyncio.wait_for(taking, 1) == ["a", "b"]


async def test_a_full_batch_goes_without_lingering() -> None:
    b: Batches[int] = Batches(size=2, within_s=60)
    taking = asyncio.create_task(b.take())
    await b.put(1)
    await b.put(2)
    assert await asyncio.wait_for(taking, 1) == [1, 2]


async def test_a_full_batch_holds_the_stream_until_the_writer_takes_it() -> None:
    b: Batches[int] = Batches(size=2, within_s=60)
    await b.put(1)
    await b.put(2)
    third = asyncio.create_task(b.put(3))
    await asyncio.sleep(0.05)
    assert not third.done()
    assert await b.take() == [1, 2]
    await asyncio.wait_for(third, 1)
    assert await asyncio.wait_for(b.take(), 1) == [3]


async def test_two_writers_each_own_partitions_and_one_writes_while_the_other_waits() -> None:
    a = app()
    stream, queue = stream_of(a)
    events = {(p, o): event(a, o, partition=p) for o in range(3) for p in (0, 1)}
    gate = asyncio.get_running_loop().create_future()
    written: list[list[tuple[int, int]]] = []

    async def write(batch: list[Message]) -> None:
        written.append([(m.partition, m.offset) for m in batch])
        if batch[0].partition == 0 and len(written) <= 2:
            await gate  # partition 0's first batch is slow to commit

    running = asyncio.create_task(consume_in_batches(stream, size=2, within_s=0, write=write, writers=2))
    for key in [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]:
        queue.put_nowait(events[key])
    for _ in range(100):
        await asyncio.sleep(0.01)
        if [(1, 2)] in written:
            break
    # partition 1 was written to the end while partition 0's first batch is still in the database
    assert [b for b in written if b[0][0] == 1] == [[(1, 0), (1, 1)], [(1, 2)]]
    assert [b for b in written if b[0][0] == 0] == [[(0, 0), (0, 1)]]
    assert all(events[1, o].message.acked for o in range(3))
    assert not any(events[0, o].message.acked for o in range(3))  # acked only after its commit
    gate.set_result(None)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if [(0, 2)] in written:
            break
    assert [b for b in written if b[0][0] == 0] == [[(0, 0), (0, 1)], [(0, 2)]]
    assert all(events[0, o].message.acked for o in range(3))
    running.cancel()
