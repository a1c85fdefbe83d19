"""A load generator in its own process: N concurrent aiohttp clients for a fixed time.

Run as `python -m tests.bench.loadgen URL TOKEN SECONDS CONCURRENCY PATH [PATH ...]`; prints one
JSON line with the latencies (ms) and the request count. Never shares the server's event loop.
"""

import asyncio
import json
import sys
import time

import aiohttp


async def run(url: str, token: str, seconds: float, concurrency: int, paths: list[str]) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(url, headers=headers, connector=connector) as session:

        async def client(i: int) -> None:
            nonlocal errors
            n = i
            while time.perf_counter() < deadline:
                path = paths[n % len(paths)]
                n += concurrency
                start = time.perf_counter()
                async with session.get(path) as r:
                    await r.read()
                    if r.status != 200:
                        errors += 1
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {"latencies_ms": latencies, "elapsed_s": elapsed, "errors": errors}


def main() -> None:
    url, token, seconds, concurrency, *paths = sys.argv[1:]
    result = asyncio.run(run(url, token, float(seconds), int(concurrency), paths))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
