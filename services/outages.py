"""Waiting out an outage of the database or the broker: a restart, a failover, a minute of network
trouble must cost a process nothing but the wait, never its life."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
FIRST_S, MAX_S = 0.5, 5.0


async def until_available(
    attempt: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    stop: asyncio.Event | None = None,
) -> T | None:
    """`attempt()` again, backing off to MAX_S, for as long as it fails with `retry_on`; its result,
    or None once `stop` is set. Anything else is not an outage and propagates."""
    delay = FIRST_S
    while stop is None or not stop.is_set():
        try:
            return await attempt()
        except retry_on as exc:
            log.warning("%s: %s; retrying in %.1f s", what, describe(exc), delay)
            if stop is None:
                await asyncio.sleep(delay)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, MAX_S)
    return None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
