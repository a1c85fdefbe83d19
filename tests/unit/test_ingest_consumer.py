"""The eager delivery of the ingest worker's faust consumer keeps faust's own outcome: a delivery
that completes at once needs no task; one that has to wait still waits, and is abandoned when the
flow is suspended (a rebalance), exactly as with faust's `wait_first`."""

import asyncio
import warnings

import faust

from services.ingest.consumer import EagerConsumer, use_eager_transport


def consumer() -> EagerConsumer:
    app = faust.App("eager-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    use_eager_transport(app)
    c = app.consumer
    assert isinstance(c, EagerConsumer)
    return c


async def test_a_delivery_that_does_not_wait_completes_without_a_task() -> None:
    c, steps = consumer(), []

    async def deliver() -> str:
        steps.append(asyncio.current_task())
        return "delivered"

    here = asyncio.current_task()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the unused suspend_flow.wait() must be closed, not leaked
        result = await c.wait_first(deliver(), c.suspend_flow.wait())
    assert result.results == ["delivered"] and not result.stopped
    assert steps == [here]  # ran in the caller's task


async def test_a_delivery_that_waits_finishes_when_its_wait_is_over() -> None:
    c, room = consumer(), asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> str:
        steps.append("started")
        steps.append(await room)
        return "delivered"

    waiting = asyncio.create_task(c.wait_first(deliver(), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    assert steps == ["started"] and not waiting.done()
    room.set_result("room")
    result = await waiting
    assert steps == ["started", "room"] and result.results == ["delivered"]


async def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    c, room = consumer(), asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> None:
        try:
            await room
            steps.append("delivered")
        except asyncio.CancelledError:
            steps.append("abandoned")
            raise

    waiting = asyncio.create_task(c.wait_first(deliver(), c.suspend_flow.wait()))
    await asyncio.sleep(0.01)
    c.suspend_flow.set()  # what stop_flow() does on a rebalance
    result = await asyncio.wait_for(waiting, 1)
    await asyncio.sleep(0)
    assert steps == ["abandoned"] and result.results == [True]  # the suspend event won


async def test_a_suspended_flow_goes_through_faust_as_before() -> None:
    c, tasks = consumer(), []
    c.suspend_flow.set()

    async def deliver() -> str:
        tasks.append(asyncio.current_task())
        return "delivered"

    await c.wait_first(deliver(), c.suspend_flow.wait())
    assert tasks and tasks[0] is not asyncio.current_task()  # faust's own path: a task per delivery
