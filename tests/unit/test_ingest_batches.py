"""Group commit: what gathered while the writer was busy goes at once; an idle writer lets a
trickle linger briefly; a full batch waits for the writer and holds the stream back."""

import asyncio

from services.ingest.batches import Batches


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
