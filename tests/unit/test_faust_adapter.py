"""The ingest worker's faust adapter. The eager delivery keeps faust's own outcome: a delivery
that completes at once needs no task; one that has to wait still waits, and is abandoned when the
flow is suspended (a rebalance), exactly as with faust's `wait_first`. Every internal it relies on
still exists; the fetch wait is capped for its own consumer only; other versions are refused."""

import asyncio
import inspect
import re
import warnings
from typing import Any

import aiokafka
import faust
import pytest

from services.ingest.faust_adapter import INTERNALS, EagerConsumer, check_versions, use_transport


def consumer() -> EagerConsumer:
    app = faust.App("eager-test", broker="kafka://127.0.0.1:1", web_enabled=False)
    use_transport(app)
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


@pytest.mark.parametrize(("owner", "attribute"), INTERNALS, ids=[f"{o.__name__}.{a}" for o, a in INTERNALS])
def test_every_internal_the_adapter_relies_on_still_exists(owner: Any, attribute: str) -> None:
    """On the class, or on an instance where faust or aiokafka set it in __init__."""
    if hasattr(owner, attribute):
        return
    assert attribute in instance_attributes(owner), f"{owner.__qualname__}.{attribute} is gone"


def instance_attributes(owner: Any) -> set[str]:
    """What the classes of `owner`'s MRO assign to `self` anywhere in their source."""
    found: set[str] = set()
    for cls in owner.__mro__:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue  # builtins
        found.update(re.findall(r"self\.(\w+)\s*(?::[^=]+)?=", source))
    return found


async def test_the_fetch_wait_is_capped_for_this_apps_consumer_only() -> None:
    app = faust.App("t-capped", broker="kafka://127.0.0.1:1")
    use_transport(app, fetch_max_wait_ms=50)
    thread = app.consumer._new_consumer_thread()  # type: ignore[attr-defined]
    client = thread._create_worker_consumer(app.transport)
    assert client._fetch_max_wait_ms == 50
    assert aiokafka.AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")._fetch_max_wait_ms == 500  # untouched


@pytest.mark.parametrize(
    ("installed", "refused"),
    [
        ({"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}, None),
        ({"faust-streaming": "0.16.0", "aiokafka": "0.14.0"}, "faust-streaming"),
        ({"faust-streaming": "0.15.9", "aiokafka": "0.13.1"}, "aiokafka"),
    ],
)
def test_versions_the_adapter_was_not_written_for_are_refused(
    installed: dict[str, str], refused: str | None
) -> None:
    if refused is None:
        check_versions(installed)
        check_versions()  # what is installed here
        return
    with pytest.raises(RuntimeError, match=refused):
        check_versions(installed)
