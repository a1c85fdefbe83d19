"""What a multi-org request costs when its orgs are on two databases instead of one (issue 36).

`python -m tests.bench.placement_probe [--tickets N] [--orgs K] [--seconds S] [--runs R]`: the same
tickets (K orgs, half in each of two log shards) once all in one database and once placed on two
(shard 1 on a second database of the same server), the API as a process on each, and the multi-org
list (first page and a later one), the dashboard and the 30-day summary report over all K orgs,
measured with the bench's load generator (32 clients). Runs alternate one and two databases.
"""

import argparse
import asyncio
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from domain.placement import shard_of
from services.auth.tokens import TokenService
from services.devstack.embedded import free_port, infrastructure
from services.eventstore.layout import reshard
from tests.bench.runner import Stack, api_ready, loadgen, percentile, rebuild_run, seed_events

SHARDS = 2


def orgs(k: int) -> list[str]:
    found: dict[int, list[str]] = {0: [], 1: []}
    i = 0
    while any(len(f) < k // 2 for f in found.values()):
        oid = f"placed-{i}"
        if len(found[shard_of(oid, SHARDS)]) < k // 2:
            found[shard_of(oid, SHARDS)].append(oid)
        i += 1
    return found[0] + found[1]


async def database(stack: Stack, name: str, tickets: int, oids: list[str]) -> str:
    dsn = await stack.database(name)
    conn = await asyncpg.connect(dsn)
    try:
        await reshard(conn, SHARDS)
    finally:
        await conn.close()
    await seed_events(dsn, tickets, oids, SHARDS)
    await rebuild_run(dsn)  # the read tables, from those events
    return dsn


async def scenarios(url: str, token: str, oids: list[str]) -> dict[str, list[str]]:
    import aiohttp

    all_orgs = ",".join(oids)
    now = datetime.now(UTC)
    frm, to = ((t.isoformat().replace("+", "%2B")) for t in (now - timedelta(days=30), now))
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s,
        s.get(f"{url}/api/v1/tickets?oids={all_orgs}&page_size=50") as r,
    ):
        page_token = (await r.json())["next_page_token"]
    return {
        "list, first page (50)": [f"/api/v1/tickets?oids={all_orgs}&page_size=50"],
        "list, next page (50)": [f"/api/v1/tickets?oids={all_orgs}&page_size=50&page_token={page_token}"],
        "dashboard counts": [f"/api/v1/dashboard/counts?oids={all_orgs}"],
        "summary report, 30 days": [f"/api/v1/reports/summary?oids={all_orgs}&from={frm}&to={to}"],
    }


async def probe(state: Path, tickets: int, k: int, seconds: float, runs: int) -> None:
    with infrastructure(state, bootstrap_servers="127.0.0.1:9", database_url=None, fast_unsafe=True) as infra:
        stack = Stack("127.0.0.1:9", infra.database_url, state)
        oids = orgs(k)
        home_orgs = [o for o in oids if shard_of(o, SHARDS) == 0]
        other_orgs = [o for o in oids if shard_of(o, SHARDS) == 1]
        one = await database(stack, "placed_one", tickets, oids)
        home = await database(stack, "placed_home", tickets // 2, home_orgs)
        other = await database(stack, "placed_other", tickets // 2, other_orgs)
        token = TokenService(stack.secret).mint("probe", {o: ["investigation.get"] for o in oids}, ttl_s=3600)
        setups = {
            "one database": (one, {}),
            "two databases": (home, {"TICKETING_PLACEMENT": f"1={other}"}),
        }
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for run in range(runs):
            for name, (dsn, extra) in setups.items():
                port = free_port()
                env = stack.env(dsn, f"p{run}{uuid.uuid4().hex[:4]}", TICKETING_API_PORT=str(port),
                                TICKETING_RATE_LIMIT_PER_S="1000000000", TICKETING_RATE_LIMIT_BURST="1000000000",
                                TICKETING_DB_POOL_MAX="16", TICKETING_LOG_SHARDS=str(SHARDS), **extra)  # fmt: skip
                stack.start("api", env)
                url = f"http://127.0.0.1:{port}"
                try:
                    await api_ready(url)
                    for scenario, paths in (await scenarios(url, token, oids)).items():
                        result = await loadgen(url, token, seconds, paths)
                        if result["errors"]:
                            raise RuntimeError(f"{name}, {scenario}: {result['errors']} requests failed")
                        results.setdefault((scenario, name), []).append(result)
                finally:
                    stack.stop()
        print(
            f"{tickets:,} tickets of {k} orgs; 32 clients for {seconds:.0f} s; {runs} run(s) each, alternating"
        )
        print(f"{'':28}{'one database':>30}{'two databases':>30}")
        for scenario in dict.fromkeys(s for s, _ in results):
            cells = []
            for name in setups:
                rs = results[(scenario, name)]
                p50 = sorted(percentile(r["latencies_ms"], 0.5) for r in rs)[len(rs) // 2]
                rate = sorted(len(r["latencies_ms"]) / r["elapsed_s"] for r in rs)[len(rs) // 2]
                cells.append(f"p50 {p50:7.1f} ms {rate:7,.0f}/s")
            print(f"{scenario:28}{cells[0]:>30}{cells[1]:>30}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="placement_probe")
    parser.add_argument("--tickets", type=int, default=100_000)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ticketing-placement-") as state:
        asyncio.run(probe(Path(state), args.tickets, args.orgs, args.seconds, args.runs))


if __name__ == "__main__":
    main()
