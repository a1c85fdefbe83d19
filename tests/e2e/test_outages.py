"""Every service rides out a PostgreSQL restart and a minute without the broker: none exits, the API
answers 503 (never 500) while the database is away, and afterwards every detection has its ticket
and every event reaches ticket-events."""

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from services.auth.tokens import TokenService
from services.devstack.embedded import Infra
from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services, publish_paced, query

ORG = "outage-org"
SERVICES = ("ingest", "relay", "projector", "scheduler", "api")


def stored_event_ids(settings: Settings) -> set[str]:
    rows = query(settings, "SELECT event_id::text FROM events WHERE type <> 'config_updated'")
    return {r[0] for r in rows}


async def _published_ids(settings: Settings) -> set[str]:
    consumer = AIOKafkaConsumer(
        settings.topics.ticket_events,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        while batch := await consumer.getmany(timeout_ms=2000):
            for records in batch.values():
                seen.update(json.loads(r.value)["event_id"] for r in records)
    finally:
        await consumer.stop()
    return seen


def publish(settings: Settings, n: int, seed: int) -> None:
    detections = list(generate(ORG, n, seed=seed))
    messages = [(key_for(d, ORG), json.dumps(d).encode()) for d in detections]
    asyncio.run(
        publish_paced(settings.kafka_bootstrap_servers or "", settings.topics.detections, messages, 50, 0.02)
    )


def total(services: Services) -> int:
    status, body = services.get(f"/api/v1/tickets?oids={ORG}&page_size=1")
    return sum(body["total_counts"].values()) if status == 200 else -1


def patch(services: Services, token: str, number: int, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        f"{services.api}/api/v1/tickets/{number}?oid={ORG}",
        data=json.dumps(body).encode(),
        method="PATCH",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def all_alive(services: Services) -> None:
    for name in SERVICES:
        assert services.procs[name].poll() is None, f"{name} exited: see {services.logs / (name + '.log')}"


@pytest.mark.timeout(420)
def test_services_ride_out_a_database_restart_and_a_broker_outage(
    services: Services, settings: Settings, infra: Infra
) -> None:
    if infra.postgres is None or infra.broker is None:
        pytest.skip("needs the embedded servers (to restart and pause them)")
    services.start(*SERVICES)
    publish(settings, 150, seed=21)
    services.wait_for(lambda: total(services) == 150, 90, "the first 150 tickets")

    # PostgreSQL restarts (a fast shutdown ends every session: 57P01) and is away for a few seconds.
    infra.postgres.stop()
    try:
        statuses = {services.get(f"/api/v1/tickets?oids={ORG}")[0] for _ in range(5)}
        ready = services.get("/readyz")[0]
        time.sleep(3)
    finally:
        infra.postgres.start()
    assert statuses == {503} and ready == 503
    publish(settings, 150, seed=22)
    services.wait_for(lambda: total(services) == 300, 120, "300 tickets after the database restart")
    all_alive(services)

    # The broker freezes for a minute. Analysts keep working meanwhile; ingest waits.
    writer = TokenService(services.env["TICKETING_JWT_SECRET"]).mint(
        "analyst@example.com", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=3600
    )
    infra.broker.suspend()
    try:
        resumer = threading.Timer(60, infra.broker.resume)
        resumer.start()
        assert patch(services, writer, 1, {"status": "acknowledged"}) == 200
        assert patch(services, writer, 2, {"assignee": "bob@example.com"}) == 200
        resumer.join()
    finally:
        infra.broker.resume()
    publish(settings, 100, seed=23)
    services.wait_for(lambda: total(services) == 400, 180, "400 tickets after the broker outage")
    all_alive(services)

    # Everything stored reached ticket-events, the analysts' changes during the outage included.
    def relayed() -> bool:
        return stored_event_ids(settings) <= asyncio.run(_published_ids(settings))

    services.wait_for(relayed, 120, "every event on ticket-events")
    all_alive(services)
