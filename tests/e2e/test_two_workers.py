"""Two ingest workers share the partitions; one is killed -9 mid-stream of 20,000 detections
(duplicates and groupable bursts). The result equals a single clean run; a full replay changes nothing."""

import asyncio
import json
import random
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.bootstrap import make_handler
from services.commands.configs import update_config
from services.commands.envelope import CommandContext
from services.devstack.embedded import Infra
from services.devstack.samples import key_for
from services.ingest.pipeline import RawRecord, ingest_batch
from services.settings import Settings
from tests.conftest import _create_database, _with_db
from tests.e2e.conftest import Services, publish_paced
from tests.integration.support import Sink

ORG = "two-workers-org"
TOTAL, DISTINCT = 20_000, 18_000
T0 = datetime(2026, 2, 1, tzinfo=UTC)
GROUPING = {"auto_grouping_enabled": True, "grouping_window_minutes": 30, "grouping_max_detections": 40}


def stream() -> list[dict[str, Any]]:
    """Bursts per (category, sensor) on a clock that moves forward, then 2,000 re-sent detections."""
    rng = random.Random(11)
    out: list[dict[str, Any]] = []
    minute = 0.0
    while len(out) < DISTINCT:
        cat, sensor = f"rule-{rng.randint(0, 14)}", f"sensor-{rng.randint(0, 19)}"
        for _ in range(min(rng.choice([1, 1, 2, 5, 20, 60]), DISTINCT - len(out))):
            minute += rng.random() * 0.5
            ts = int((T0 + timedelta(minutes=minute)).timestamp() * 1000)
            out.append({"detect_id": str(uuid.UUID(int=rng.getrandbits(128))), "cat": cat, "priority": rng.randint(0, 10),
                        "ts": ts, "routing": {"oid": ORG, "sid": sensor, "hostname": sensor.upper()}})  # fmt: skip
    return out + [out[i] for i in sorted(rng.sample(range(DISTINCT), TOTAL - DISTINCT))]


async def fetch(url: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql)
    finally:
        await conn.close()


async def configure(url: str) -> None:
    conn = await asyncpg.connect(url)  # the test database is a copy of a migrated template
    try:
        async with conn.transaction():
            await update_config(conn, ORG, GROUPING, CommandContext(actor="test"), T0)
    finally:
        await conn.close()


GROUPS_SQL = "SELECT ticket_id::text, array_agg(detection_id ORDER BY detection_id) FROM detection_index GROUP BY ticket_id"


def grouped(url: str) -> dict[str, list[str]]:
    return {r[0]: list(r[1]) for r in asyncio.run(fetch(url, GROUPS_SQL))}


def count(url: str, sql: str) -> int:
    return int(asyncio.run(fetch(url, sql))[0][0])


async def clean_run(url: str, messages: list[tuple[bytes, bytes]]) -> None:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        records = [RawRecord("d", 0, i, k, v) for i, (k, v) in enumerate(messages)]
        for i in range(0, len(records), 1000):
            await ingest_batch(pool, make_handler(), records[i : i + 1000], Sink(), default_oid=None)
    finally:
        await pool.close()


def test_two_workers_a_kill_and_a_replay(services: Services, settings: Settings, infra: Infra) -> None:
    url = settings.database_url or ""
    asyncio.run(configure(url))
    detections = stream()
    messages = [(key_for(d, ORG), json.dumps(d).encode()) for d in detections]

    services.env["TICKETING_INGEST_BATCH_SIZE"] = "250"
    services.start_as("ingest-a", "ingest")
    services.start_as("ingest-b", "ingest")
    topic, bootstrap = settings.topics.detections, settings.kafka_bootstrap_servers or ""
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish_paced(bootstrap, topic, messages, 500, 0.1))
    )
    publisher.start()
    index = "SELECT count(*) FROM detection_index"
    services.wait_for(lambda: count(url, index) >= 4000, 120, "the first batches")
    services.kill9("ingest-a")
    assert count(url, index) < DISTINCT, "the workers finished before one could be killed"
    publisher.join()
    services.wait_for(lambda: count(url, index) >= DISTINCT, 180, "every detection")

    # A single clean run of the same stream, in another database.
    clean = _with_db(infra.database_url, f"t_{uuid.uuid4().hex[:16]}")
    asyncio.run(_create_database(infra.database_url, clean.rsplit("/", 1)[1]))
    asyncio.run(configure(clean))
    asyncio.run(clean_run(clean, messages))

    live = grouped(url)
    assert live == grouped(clean)
    assert sum(len(v) for v in live.values()) == DISTINCT
    assert count(url, "SELECT sum(detection_count) FROM grouping_index") == DISTINCT
    assert 0 < len(live) < DISTINCT / 5  # bursts really were grouped
    assert count(url, "SELECT count(*) FROM events WHERE data->>'continues_ticket_id' IS NOT NULL") > 0
    events_before = count(url, "SELECT count(*) FROM events")

    # Replay: a worker of a new consumer group re-reads the whole topic from the start.
    services.start_as("replay", "ingest", TICKETING_INGEST_GROUP=f"replay-{uuid.uuid4().hex[:6]}")
    log = services.logs / "replay.log"

    def replayed() -> int:
        text = log.read_text() if log.exists() else ""
        return sum(int(n) for n in re.findall(r"batch of (\d+):", text))

    services.wait_for(lambda: replayed() >= TOTAL, 180, "the replay")
    assert count(url, "SELECT count(*) FROM events") == events_before
    assert grouped(url) == live
