"""`make soak`: every service for a long while at a steady rate, watched for leaks, lag and loss.

Ingest, projector, relay, scheduler and API run as processes on the embedded broker and database
(or the ones the environment names). Detections go out at a steady rate: both formats, 10% sent
again (duplicates), one in a thousand malformed. A poller walks the org's tickets through `GET
/api/v1/tickets` as the latency benchmark does. Every interval one line: detections published,
the backlog of those not yet visible, publish -> visible p99 of the interval, each service's
current RSS, and the CPU of each service, of PostgreSQL and of the embedded broker. At the end,
once the backlog has drained (or DRAIN_S has passed: a check fails), it checks what a long run
can break: every detection has its ticket and no duplicate made one, every malformed one is on
the dead-letter topic, the projector and the relay have reached the head of the event store, and
no service's memory kept growing (RSS up in both the middle and the last third). Exit status 1 if
a check fails; the figures also go to a JSON file.
"""

import asyncio
import json
import random
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.devstack.embedded import infrastructure
from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.bench.cpu import CpuMeter
from tests.bench.pace import paced
from tests.bench.runner import Stack, percentile, rss_mb, serve_pipeline, wait_rows, watch_tickets

SERVICES = ("ingest", "projector", "relay", "scheduler", "api")
ORG = "soak-org"
# A service whose RSS grows by more than both of these in the middle third and again in the last
# third of the run fails the memory check.
GROWTH_FACTOR = 1.1
GROWTH_MB = 10.0
RECENT = 10_000
DRAIN_S = 300


class Interval(msgspec.Struct):
    elapsed_s: float
    published: int
    visible: int
    backlog: int
    p99_ms: float | None
    rss_mb: dict[str, float]
    cpu_pct: dict[str, float]  # of one core over the interval, per service, PostgreSQL and broker


class Check(msgspec.Struct):
    name: str
    ok: bool
    detail: str


class SoakReport(msgspec.Struct):
    minutes: float
    rate: int
    intervals: list[Interval]
    checks: list[Check]


async def soak(stack: Stack, minutes: float, rate: int, interval_s: float) -> SoakReport:
    pipeline = await serve_pipeline(stack, "soak", SERVICES, ORG)
    dsn, port, settings, procs, bearer = pipeline
    n = int(rate * minutes * 60)
    # both formats, one second apart in detection time, the last of them now
    fresh_detections = generate(ORG, n, seed=11, start_ms=int(time.time() * 1000) - n * 1000)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    recent: list[tuple[bytes, bytes]] = []  # what duplicates are drawn from, at most RECENT
    malformed = 0
    intervals: list[Interval] = []
    rng = random.Random(11)
    stop = asyncio.Event()
    poller = asyncio.create_task(
        watch_tickets(port, ORG, bearer, seen, lambda: stop.is_set() and len(seen) >= len(sent))
    )
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1)
    await producer.start()
    began = time.perf_counter()
    reported = 0
    meter = CpuMeter({name: p.pid for name, p in procs.items()})

    def report() -> None:
        nonlocal reported
        fresh = list(seen)[reported:]
        reported += len(fresh)
        latencies = [(seen[k] - sent[k]) * 1000 for k in fresh]
        intervals.append(
            Interval(
                elapsed_s=round(time.perf_counter() - began, 1),
                published=len(sent),
                visible=len(seen),
                backlog=len(sent) - len(seen),
                p99_ms=round(percentile(latencies, 0.99), 1) if latencies else None,
                rss_mb={name: round(rss_mb(p.pid, "VmRSS"), 1) for name, p in procs.items()},
                cpu_pct=meter.percentages(),
            )
        )
        i = intervals[-1]
        p99 = f"{i.p99_ms:8.1f}" if i.p99_ms is not None else "       -"
        rss = " ".join(f"{k} {v:.0f}" for k, v in i.rss_mb.items())
        cpus = " ".join(f"{k} {v:.0f}" for k, v in i.cpu_pct.items())
        print(
            f"{i.elapsed_s:7.0f} s {i.published:9,} sent {i.backlog:6,} behind  p99 {p99} ms"
            f"  RSS MB: {rss}  CPU %: {cpus}",
            flush=True,
        )

    try:
        next_report = began + interval_s
        async for _ in paced(rate, n):
            if recent and rng.random() < 0.1:
                key, value = rng.choice(recent)  # the same detection again: no new ticket
            elif rng.random() < 0.001:
                key, value = ORG.encode(), b'{"not": "a detection"'
                malformed += 1
            else:
                d = next(fresh_detections)
                detection_id = str(d.get("detect_id") or d["id"])  # LimaCharlie's or ExtraHop's id
                key, value = key_for(d, ORG), json.dumps(d).encode()
                if len(recent) < RECENT:
                    recent.append((key, value))
                else:
                    recent[rng.randrange(RECENT)] = (key, value)
                sent[detection_id] = time.perf_counter()
            await producer.send(settings.topics.detections, value, key=key)
            if time.perf_counter() >= next_report:
                report()
                next_report += interval_s
        stop.set()
        drained = True
        try:
            await asyncio.wait_for(asyncio.shield(poller), DRAIN_S)
        except TimeoutError:
            drained = False
        report()
        checks = [Check("the backlog drained", drained, drain_detail(len(sent) - len(seen), intervals[-1]))]
        checks += await final_checks(stack, dsn, settings, len(sent), malformed, intervals)
    finally:
        poller.cancel()
        await producer.stop()
        stack.stop()
    return SoakReport(minutes=minutes, rate=rate, intervals=intervals, checks=checks)


_BEHIND = (  # checkpoints behind the head of their shard
    "SELECT count(*) FROM subscription_checkpoints c JOIN log_shard_heads h ON h.shard = c.shard"
    " WHERE c.position < h.head"
)


async def final_checks(
    stack: Stack, dsn: str, settings: Settings, distinct: int, malformed: int, intervals: list[Interval]
) -> list[Check]:
    checks = []
    conn = await asyncpg.connect(dsn)
    try:
        totals = await conn.fetchrow(
            "SELECT count(*), coalesce(sum(detection_count), 0) FROM tickets WHERE oid = $1", ORG
        )
        assert totals is not None  # an aggregate always answers one row
        tickets, detections = totals
        checks.append(
            Check(
                "a ticket per distinct detection, none for a duplicate",
                tickets == distinct and detections == distinct,
                f"{distinct:,} sent, {tickets:,} tickets, {detections:,} detections",
            )
        )
    finally:
        await conn.close()
    try:
        await wait_rows(dsn, _BEHIND, (0,), 60)
        caught_up, detail = True, "none behind"
    except TimeoutError as exc:
        caught_up, detail = False, str(exc)
    checks.append(Check("projector and relay at the head of the event store", caught_up, detail))
    dead = await count_messages(stack.bootstrap, settings.topics.deadletter)
    checks.append(
        Check(
            "every malformed detection dead-lettered",
            dead == malformed,
            f"{malformed} sent, {dead} on {settings.topics.deadletter}",
        )
    )
    if len(intervals) >= 3:
        grown = memory_growth(intervals)
        detail = "; ".join(f"{k} {a:.0f} -> {b:.0f} -> {c:.0f} MB" for k, (a, b, c) in grown.items())
        checks.append(Check("no service's memory kept growing", not grown, detail or "steady"))
    return checks


def drain_detail(missing: int, last: Interval) -> str:
    """What was not visible after the drain, and, if something was, who was busy meanwhile: on
    the embedded broker a long run can leave the broker at a full core and the services idle
    (README, Soak), which is the broker's limit, not the service's."""
    detail = f"{missing:,} not visible {DRAIN_S} s after publishing stopped"
    if missing:
        busiest = sorted(last.cpu_pct.items(), key=lambda kv: -kv[1])
        detail += "; meanwhile, % of a core: " + ", ".join(f"{k} {v:.0f}" for k, v in busiest)
    return detail


def memory_growth(intervals: list[Interval]) -> dict[str, tuple[float, float, float]]:
    """Services whose RSS grew in both the middle and the last third of the run, each time by more
    than GROWTH_FACTOR and GROWTH_MB: a cache that fills once (the scheduler's, when the first SLA
    deadlines pass 15 minutes in) grows in one of them, a leak in both. service -> (RSS a third
    in, two thirds in, at the end)."""
    n = len(intervals)
    a, b, c = intervals[n // 3].rss_mb, intervals[2 * n // 3].rss_mb, intervals[-1].rss_mb

    def grew(then: float, now: float) -> bool:
        return now > max(then * GROWTH_FACTOR, then + GROWTH_MB)

    return {k: (a[k], b[k], c[k]) for k in c if grew(a[k], b[k]) and grew(b[k], c[k])}


async def count_messages(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        group_id=f"soak-count-{uuid.uuid4().hex[:6]}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        n = 0
        while batch := await consumer.getmany(timeout_ms=2000):
            n += sum(len(records) for records in batch.values())
        return n
    finally:
        await consumer.stop()


async def run(minutes: float, rate: int, interval_s: float, state: Path) -> SoakReport:
    settings = Settings.from_env()
    with infrastructure(
        state, bootstrap_servers=settings.kafka_bootstrap_servers, database_url=settings.database_url
    ) as infra:
        stack = Stack(infra.bootstrap_servers, infra.database_url, state)
        print(f"soak: {rate}/s for {minutes} min, every service; a line every {interval_s:.0f} s", flush=True)
        return await soak(stack, minutes, rate, interval_s)


def verdict(report: SoakReport, out: Path) -> bool:
    """Print the checks, write the report; True if every check passed."""
    out.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    for c in report.checks:
        print(f"{'ok  ' if c.ok else 'FAIL'} {c.name}: {c.detail}")
    print(f"written to {out}")
    return all(c.ok for c in report.checks)


def main(argv: list[str] | None = None) -> int:
    """`make soak`: `python -m tests.bench.soak [--minutes M] [--rate R] [--interval S] [--out FILE]`."""
    import argparse
    import logging
    import tempfile

    from services.bootstrap import collect_cycles_less_often

    parser = argparse.ArgumentParser(
        prog="soak", description="every service at a steady rate for a long while"
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=500, help="detections per second")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between report lines")
    parser.add_argument("--out", default="soak-results.json", help="where to write the JSON results")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.interval <= 0:
        parser.error("--minutes, --rate and --interval must be positive")
    collect_cycles_less_often()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ticketing-soak-") as state:
        report = asyncio.run(run(args.minutes, args.rate, args.interval, Path(state)))
    return 0 if verdict(report, Path(args.out)) else 1


if __name__ == "__main__":
    sys.exit(main())
