"""The ingest benchmark, with where each run's time went: CPU seconds of every service process and
of PostgreSQL (the soak's CpuMeter), and PostgreSQL's statements by time (pg_stat_statements).

`python -m tests.bench.probe [--detections N] [--workers W] [--runs R] [--top K]`. The figures of
one commit swing by a quarter from run to run here, so commits are compared run by run: check
each out in a `git worktree`, copy today's tests/bench/ in, and alternate (docs/benchmarks.md).
It starts its own embedded PostgreSQL, with pg_stat_statements loaded.
"""

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from services.devstack.embedded import infrastructure
from tests.bench.cpu import CpuMeter
from tests.bench.runner import FULL, Stack, ingest_run


class Probe:
    def __init__(self, top: int) -> None:
        self.top = top

    @contextlib.asynccontextmanager
    async def watch(self, dsn: str, procs: list[subprocess.Popen[bytes]]) -> AsyncIterator[None]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
            names = [*(f"ingest {i + 1}" for i in range(len(procs) - 1)), "projector"]
            meter = CpuMeter({name: p.pid for name, p in zip(names, procs, strict=True)})
            yield
            spent = meter.seconds()
            print("CPU s: " + ", ".join(f"{n} {spent[n]:.1f}" for n in [*names, "postgres"]))
            rows = await conn.fetch(
                "SELECT round(total_exec_time)::bigint, calls, rows, regexp_replace(query, '\\s+', ' ', 'g')"
                " FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
                " WHERE datname = current_database()) ORDER BY total_exec_time DESC LIMIT $1",
                self.top,
            )
            for ms, calls, n, query in rows:
                print(f"{ms:>7} ms {calls:>7} calls {n:>8} rows  {query[:140]}")
        finally:
            await conn.close()


async def probe(state: Path, detections: int, workers: int, runs: int, top: int) -> None:
    for _ in range(2):  # the second time round once pg_stat_statements had to be loaded
        with infrastructure(state, bootstrap_servers=None, database_url=None) as infra:
            conn = await asyncpg.connect(infra.database_url)
            try:
                loaded = "pg_stat_statements" in await conn.fetchval("SHOW shared_preload_libraries")
                if not loaded:
                    await conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
                    continue
            finally:
                await conn.close()
            stack, scale = (
                Stack(infra.bootstrap_servers, infra.database_url, state),
                FULL._replace(ingest_n=detections),
            )
            try:
                for _ in range(runs):
                    rate = (
                        await ingest_run(stack, scale, uuid.uuid4().hex[:6], workers, Probe(top).watch)
                    ).rate
                    print(f"{rate:,.0f} detections/s ({detections:,}, {workers} worker(s))\n", flush=True)
            finally:
                stack.stop()
            return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--detections", type=int, default=FULL.ingest_n)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--top", type=int, default=14, help="statements shown per run")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ticketing-probe-") as state:
        asyncio.run(probe(Path(state), args.detections, args.workers, args.runs, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
