"""Orgs placed on two PostgreSQL servers (issue 36): org A on the home server, org B on a second
one, the services as real processes. Over Kafka and the API: tickets are created on each org's
server, a multi-org list pages through both in order, the dashboard and the report sum both,
ticket-events carries every event of both in order per ticket, and a kill -9 of the ingest worker
mid-stream loses and duplicates nothing on either server."""

import asyncio
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.bootstrap import prepare
from services.devstack.embedded import RUNTIME_ROLE, EmbeddedPostgres, as_role, ensure_role
from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services, publish_paced, query_at
from tests.e2e.test_operations import scrape, value
from tests.integration.test_log_shards import orgs_in_shards
from tests.integration.test_relay import consume_all

SHARDS = 2
[[ORG_A], [ORG_B]] = orgs_in_shards(SHARDS)  # shard 0's on the home server, shard 1's on the second
DISTINCT, RESENT = 1500, 150  # per org


@pytest.fixture
def second_server(tmp_path: Path) -> Iterator[str]:
    """Another PostgreSQL server (its own process, port and data), with an empty database."""
    server = EmbeddedPostgres(tmp_path / "postgres-b", fast_unsafe=True)
    server.start()
    try:

        async def create() -> None:
            await ensure_role(server.database_url, RUNTIME_ROLE)
            conn = await asyncpg.connect(server.database_url)
            try:
                await conn.execute("CREATE DATABASE ticketing_b")
            finally:
                await conn.close()

        asyncio.run(create())
        yield server.database_url.rpartition("/")[0] + "/ticketing_b"
    finally:
        server.stop()


def events(url: str) -> int:
    return int(query_at(url, "SELECT count(*) FROM events")[0][0])


def test_orgs_on_two_servers_over_kafka_and_the_api(
    service_env: dict[str, str], second_server: str, tmp_path: Path
) -> None:
    env = {
        **service_env,
        "TICKETING_LOG_SHARDS": str(SHARDS),
        "TICKETING_PLACEMENT": f"1={as_role(second_server, RUNTIME_ROLE)}",
        "TICKETING_MIGRATION_PLACEMENT": f"1={second_server}",
        "TICKETING_INGEST_BATCH_SIZE": "100",
    }
    settings = Settings.from_env(env)
    asyncio.run(prepare(settings))  # migrates both servers
    home = settings.migration_database_url or ""
    services = Services(env, tmp_path)  # (its token: an operator's, reading every org)
    try:
        _run(services, settings, home, second_server)
    finally:
        services.stop_all()


def _run(services: Services, settings: Settings, home: str, other: str) -> None:
    messages: list[tuple[bytes, bytes]] = []
    ids: dict[str, set[str]] = {}
    for oid, seed in ((ORG_A, 11), (ORG_B, 12)):
        detections = list(generate(oid, DISTINCT, seed=seed))
        ids[oid] = {d["detect_id"] if "detect_id" in d else str(d["id"]) for d in detections}
        mine = [(key_for(d, oid), json.dumps(d).encode()) for d in detections]
        messages += mine + mine[:: DISTINCT // RESENT][:RESENT]  # each org's re-sends too
    messages.sort(key=lambda m: hash(m[1]))  # both orgs interleaved, re-sends among them
    expected = 2 * (DISTINCT + RESENT)  # events: a created per detection, a duplicates_seen per re-send

    services.start("ingest", "projector", "relay", "api")
    topic, bootstrap = settings.topics.detections, settings.kafka_bootstrap_servers or ""
    publisher = threading.Thread(
        target=lambda: asyncio.run(publish_paced(bootstrap, topic, messages, 100, 0.05))
    )
    publisher.start()
    services.wait_for(lambda: events(home) + events(other) >= 600, 90, "the first batches")
    services.kill9("ingest")
    assert events(home) + events(other) < expected, "the worker finished before it could be killed"
    services.start("ingest")
    publisher.join()
    services.wait_for(lambda: events(home) + events(other) >= expected, 120, "every detection and re-send")
    time.sleep(3)  # anything redelivered after the restart has been handled by now

    # each server holds its org's events only: every detection once, every re-send counted once
    for url, oid in ((home, ORG_A), (other, ORG_B)):
        assert events(url) == DISTINCT + RESENT
        assert {r[0] for r in query_at(url, "SELECT DISTINCT metadata->>'oid' FROM events")} == {oid}
        created = query_at(
            url, "SELECT data->'detection'->>'detection_id' FROM events WHERE type = 'created'"
        )
        assert sorted(r[0] for r in created) == sorted(ids[oid])
        counted = query_at(
            url, "SELECT sum((data->>'count')::int) FROM events WHERE type = 'duplicates_seen'"
        )
        assert counted[0][0] == RESENT
        numbers = [r[0] for r in query_at(url, "SELECT ticket_number FROM ticket_index ORDER BY 1")]
        assert numbers == list(range(1, DISTINCT + 1))  # a killed transaction consumed no number

    _api_merges_both(services, home, other)
    _ticket_events_carry_both_in_order(settings, home, other)
    # each database's readers are measured apart (one gauge for both would hide a stuck one)
    samples = scrape(services.metrics["projector"])
    for database in ("home", "shard 1"):
        behind = value(
            samples,
            "ticketing_subscription_behind_events",
            subscription="projection:tickets",
            database=database,
        )
        assert behind == 0 and value(samples, "ticketing_log_head_position", database=database) > 0, database


def _get(services: Services, path: str) -> Any:
    status, body = services.get(path)
    assert status == 200, (path, body)
    return body


def _api_merges_both(services: Services, home: str, other: str) -> None:
    oids = f"{ORG_A},{ORG_B}"

    def projected() -> bool:
        body = services.get(f"/api/v1/tickets?oids={oids}&page_size=1")[1] or {}
        counts: dict[str, int] = body.get("total_counts") or {}
        return sum(counts.values()) == 2 * DISTINCT

    services.wait_for(projected, 60, "both servers' tickets projected")
    tickets = query_at(home, "SELECT ticket_id, created_at, ticket_number FROM tickets")
    tickets += query_at(other, "SELECT ticket_id, created_at, ticket_number FROM tickets")
    newest_first = [str(r[0]) for r in sorted(tickets, key=lambda r: (r[1], r[2], r[0]), reverse=True)]
    seen: list[str] = []
    token = None
    while True:
        query = f"/api/v1/tickets?oids={oids}&page_size=200" + (
            f"&page_token={urllib.parse.quote(token)}" if token else ""
        )
        body = _get(services, query)
        seen += [t["ticket_id"] for t in body["tickets"]]
        token = body["next_page_token"]
        if not token:
            break
    assert seen == newest_first  # both servers' tickets, each once, in the list's order

    board = _get(services, f"/api/v1/dashboard/counts?oids={oids}")
    assert board["orgs"][ORG_A]["total"] == board["orgs"][ORG_B]["total"] == DISTINCT
    assert board["total"]["total"] == 2 * DISTINCT
    assert board["total"]["by_status"] == {"new": 2 * DISTINCT}
    report = _get(services, f"/api/v1/reports/summary?oids={oids}")
    assert report["orgs"][ORG_A]["total"] + report["orgs"][ORG_B]["total"] == report["aggregate"]["total"]
    assert report["aggregate"]["total"] == 2 * DISTINCT


def _ticket_events_carry_both_in_order(settings: Settings, home: str, other: str) -> None:
    stored = {
        str(r[0]): (str(r[1]), r[2])
        for url in (home, other)
        for r in query_at(url, "SELECT event_id, stream_id, version FROM events")
    }
    published = asyncio.run(consume_all(settings, settings.topics.ticket_events, len(stored), 60))
    versions: dict[str, list[int]] = {}
    got: set[str] = set()
    for message in sorted(published, key=lambda m: (m.partition, m.offset)):
        value = json.loads(message.value)
        got.add(value["event_id"])
        versions.setdefault(value["ticket_id"], []).append(value["version"])
    assert got == set(stored)  # every event of both servers
    for ticket, seen in versions.items():  # each ticket's events once, in order (the relay ran throughout)
        assert seen == sorted(v for s, v in stored.values() if s == ticket), ticket
