"""Duplicates are counted, not only dropped: a detection re-sent five times counts five, and a
replay of the whole topic by a new consumer group (every message read again) counts nothing more."""

import asyncio
import json
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from services.devstack.samples import generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services
from tests.e2e.test_pipeline import produce

ORG = "dup-org"


def consumed(port: int) -> float:
    """What the process's ingest has read (-1 while its metrics listener is not up yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            families = list(text_string_to_metric_families(r.read().decode()))
    except OSError:
        return -1
    return sum(
        s.value for f in families for s in f.samples if s.name == "ticketing_detections_consumed_total"
    )


def test_re_sends_count_and_a_replay_counts_nothing(services: Services, settings: Settings) -> None:
    services.start("ingest", "projector", "api")
    [detection] = list(generate(ORG, 1, seed=3))
    message = (key_for(detection, ORG), json.dumps(detection).encode())
    asyncio.run(produce(settings, [message]))
    asyncio.run(produce(settings, [message] * 5))  # the sensor sent it again, five times

    def ticket() -> dict[str, Any]:
        status, body = services.get(f"/api/v1/tickets?oids={ORG}")
        return body["tickets"][0] if status == 200 and body["tickets"] else {}

    services.wait_for(lambda: ticket().get("duplicate_count") == 5, 60, "five duplicates counted")
    first = ticket()
    assert first["last_seen_at"] and len(services.get(f"/api/v1/tickets?oids={ORG}")[1]["tickets"]) == 1
    # A new consumer group reads the whole topic again: six messages, nothing new.
    services.start_as(
        "replay", "ingest", TICKETING_INGEST_GROUP=services.env["TICKETING_INGEST_GROUP"] + "-replay"
    )
    services.wait_for(lambda: consumed(services.metrics["replay"]) == 6, 60, "the replay read everything")
    # The record itself, not the read model: every duplicates_seen event the ticket has.
    status, one = services.get(f"/api/v1/tickets/{first['ticket_number']}?oid={ORG}")
    seen = [e["metadata"]["count"] for e in one["events"] if e["type"] == "duplicates_seen"]
    assert status == 200 and sum(seen) == 5 and one["ticket"]["duplicate_count"] == 5
    status, page = services.get(f"/api/v1/tickets?oids={ORG}&sort=duplicate_count")
    assert status == 200 and page["tickets"][0]["duplicate_count"] == 5
