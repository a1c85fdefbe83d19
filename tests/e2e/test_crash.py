"""kill -9 of the ingest worker in the middle of 5,000 detections loses nothing and writes nothing twice."""

import asyncio
import json
import threading
import time

import asyncpg

from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services, publish_paced, query

ORG = "crash-org"
TOTAL, DISTINCT = 5000, 4500


def event_count(settings: Settings) -> int:
    return int(query(settings, "SELECT count(*) FROM events")[0][0])


def test_kill_9_mid_stream_then_restart(services: Services, settings: Settings) -> None:
    services.env["TICKETING_INGEST_BATCH_SIZE"] = "100"
    detections = list(generate(ORG, DISTINCT, seed=3))
    messages = [(key_for(d, ORG), json.dumps(d).encode()) for d in detections]
    messages += messages[:: DISTINCT // (TOTAL - DISTINCT)][: TOTAL - DISTINCT]  # 500 duplicates
    assert len(messages) == TOTAL

    services.start("ingest")
    topic, bootstrap = settings.topics.detections, settings.kafka_bootstrap_servers or ""
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish_paced(bootstrap, topic, messages, 100, 0.05))
    )
    publisher.start()
    services.wait_for(lambda: event_count(settings) >= 800, 90, "the first batches")
    services.kill9("ingest")
    killed_at = event_count(settings)
    assert killed_at < DISTINCT, "the worker finished before it could be killed"
    services.start("ingest")
    publisher.join()
    # Every detection once, and every re-send counted once (one duplicates_seen each here), however
    # many messages the kill made the restarted worker read again.
    services.wait_for(lambda: event_count(settings) >= TOTAL, 120, "every detection and re-send")
    time.sleep(3)  # anything redelivered after the restart has been handled by now

    assert event_count(settings) == TOTAL
    counted = query(settings, "SELECT sum((data->>'count')::int) FROM events WHERE type = 'duplicates_seen'")
    assert counted[0][0] == TOTAL - DISTINCT
    twice = query(
        settings,
        "SELECT data->'detection'->>'detection_id', count(*) FROM events WHERE type = 'created'"
        " GROUP BY 1 HAVING count(*) > 1",
    )
    assert twice == []
    created = query(
        settings, "SELECT data->'detection'->>'detection_id' AS d FROM events WHERE type = 'created'"
    )
    assert {r["d"] for r in created} == {
        d["detect_id"] if "detect_id" in d else str(d["id"]) for d in detections
    }
    numbers = [r[0] for r in query(settings, "SELECT ticket_number FROM ticket_index ORDER BY 1")]
    assert numbers == list(range(1, DISTINCT + 1))  # a killed transaction consumed no number


async def _hold_numbering(settings: Settings, held: threading.Event, release: threading.Event) -> None:
    """Hold the org's ticket-number row, so the worker's next batch waits inside its transaction."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT * FROM ticket_numbers WHERE oid = $1 FOR UPDATE", ORG)
            held.set()
            await asyncio.to_thread(release.wait, 120)
    finally:
        await conn.close()


def test_sigterm_mid_batch_stops_cleanly_then_restart(services: Services, settings: Settings) -> None:
    """A normal stop (SIGTERM, as Kubernetes sends) while a batch waits in the database gives the
    batch up, leaves the consumer group and exits 0 (it used to wait on the batch for good, or, once
    faust cancelled it, exit 70 as for an unknown failure); the batch was never acknowledged, so the
    restart writes it, once."""
    services.env["TICKETING_INGEST_BATCH_SIZE"] = "100"
    detections = list(generate(ORG, 2000, seed=4))
    messages = [(key_for(d, ORG), json.dumps(d).encode()) for d in detections]
    topic, bootstrap = settings.topics.detections, settings.kafka_bootstrap_servers or ""

    services.start("ingest")
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish_paced(bootstrap, topic, messages, 100, 0.05))
    )
    publisher.start()
    services.wait_for(lambda: event_count(settings) >= 300, 90, "the first batches")
    held, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=lambda: asyncio.run(_hold_numbering(settings, held, release)))
    holder.start()
    assert held.wait(30)
    time.sleep(1.0)  # the worker's next batch is now waiting on the row
    proc = services.procs.pop("ingest")
    proc.terminate()
    try:
        code = proc.wait(30)  # it gives the batch up instead of waiting on the database
    finally:
        release.set()
        holder.join()
    log = (services.logs / "ingest.log").read_text()
    assert "unexpected failure" not in log, log[-3000:]
    assert code == 0, log[-3000:]

    services.start("ingest")
    publisher.join()
    services.wait_for(lambda: event_count(settings) >= len(detections), 120, "every detection")
    time.sleep(3)
    assert event_count(settings) == len(detections)
    numbers = [r[0] for r in query(settings, "SELECT ticket_number FROM ticket_index ORDER BY 1")]
    assert numbers == list(range(1, len(detections) + 1))
