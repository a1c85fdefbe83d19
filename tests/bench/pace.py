"""A steady rate for a benchmark's publisher (shared by the runner, the console bench and the soak)."""

import asyncio
import time
from collections.abc import AsyncIterator


async def paced(rate: float, n: int) -> AsyncIterator[int]:
    """0 .. n-1, the i-th at i / rate seconds after the start (a steady rate, not bursts)."""
    interval = 1 / rate
    began = time.perf_counter()
    for i in range(n):
        delay = began + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i
