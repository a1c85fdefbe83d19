"""Detections published to Kafka become tickets visible through the API and events on ticket-events."""

import asyncio
import base64
import gzip
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiokafka import AIOKafkaProducer

from services.devstack.samples import extrahop, generate, key_for
from services.settings import Settings
from tests.e2e.conftest import Services
from tests.integration.test_relay import consume_all

ORG = "8cbe27f4-bfa1-4afb-ba19-138cd51389cd"
APPLIANCE_KEY = "e2e-appliance-key-0042"


class Hooks(ThreadingHTTPServer):
    """The org's webhook endpoint (keeps each POST's headers and gunzipped JSON) and its ExtraHop
    appliance (keeps each detection PATCH that carries the key)."""

    def __init__(self) -> None:
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.patched: list[tuple[str, dict[str, Any]]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.got.append((dict(self.headers), json.loads(gzip.decompress(body))))
                self.send_response(204)
                self.end_headers()

            def do_PATCH(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                keyed = self.headers["Authorization"] == f"ExtraHop apikey={APPLIANCE_KEY}"
                if keyed:
                    hooks.patched.append((self.path.rsplit("/", 1)[-1], json.loads(body)))
                self.send_response(204 if keyed else 401)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


async def set_webhook(settings: Settings, url: str, appliance: str) -> None:
    from services.bootstrap import create_pool
    from services.commands.configs import update_config
    from services.commands.envelope import CommandContext

    pool = await create_pool(settings, max_size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            patch = {"webhook_url": url, "extrahop": {"url": appliance, "api_key": APPLIANCE_KEY}}
            await update_config(conn, ORG, patch, CommandContext("admin@x"), datetime.now(UTC))
    finally:
        await pool.close()


async def produce(settings: Settings, messages: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(settings.topics.detections, value, key=key)
    finally:
        await producer.stop()


def test_detections_become_tickets_end_to_end(services: Services, settings: Settings) -> None:
    hooks = Hooks()
    asyncio.run(
        set_webhook(
            settings, f"http://127.0.0.1:{hooks.server_port}/hook", f"http://127.0.0.1:{hooks.server_port}"
        )
    )
    services.start("ingest", "relay", "projector", "api")
    detections = list(generate(ORG, 20, seed=7))  # 10 LimaCharlie, 10 ExtraHop
    good: list[tuple[bytes | None, bytes | None]] = [
        (key_for(d, ORG), json.dumps(d).encode()) for d in detections
    ]
    import random

    no_org = extrahop(random.Random(1), ts_ms=1_763_800_000_000)
    bad = [(b"junk", b"{this is not json"), (None, json.dumps(no_org).encode()), (ORG.encode(), None)]
    duplicates = good[:5]
    asyncio.run(produce(settings, good + bad + duplicates))

    def total() -> int:
        status, body = services.get(f"/api/v1/tickets?oids={ORG}&page_size=200")
        return sum(body["total_counts"].values()) if status == 200 else -1

    services.wait_for(lambda: total() == 20, 60, "20 tickets")
    _, body = services.get(f"/api/v1/tickets?oids={ORG}&page_size=200")
    by_detection = {t["detection_id"]: t for t in body["tickets"]}
    lc = detections[0]
    t = by_detection[lc["detect_id"]]
    assert (t["detection_cat"], t["detection_source"], t["detection_priority"]) == (
        lc["cat"],
        "dr-general",
        lc["priority"],
    )
    assert (t["sensor_id"], t["hostname"], t["oid"], t["status"]) == (
        lc["routing"]["sid"], lc["routing"]["hostname"], ORG, "new",
    )  # fmt: skip
    eh = detections[1]
    t = by_detection[str(eh["id"])]
    assert (t["detection_cat"], t["detection_source"], t["hostname"]) == (
        eh["type"],
        "extrahop",
        "host-" + eh["participants"][0]["hostname"][5:],
    )
    assert sorted(t["ticket_number"] for t in body["tickets"]) == list(range(1, 21))

    status, one = services.get(f"/api/v1/tickets/{t['ticket_number']}?oid={ORG}")
    assert status == 200 and [e["type"] for e in one["events"]] == [
        "created",
        "duplicates_seen",
    ]  # re-sent once
    assert one["ticket"]["duplicate_count"] == 1

    letters = asyncio.run(consume_all(settings, settings.topics.deadletter, 3))
    assert len(letters) == 3
    # they came from different partitions, so in no particular order
    dead = [json.loads(m.value) for m in letters]
    garbage, no_org_letter, empty = (
        next(v for v in dead if text in v["error"]) for text in ("not valid JSON", "no org", "empty message")
    )
    assert base64.b64decode(garbage["value_b64"]) == b"{this is not json"
    assert garbage["source"]["topic"] == settings.topics.detections
    assert isinstance(garbage["source"]["offset"], int)
    assert base64.b64decode(no_org_letter["value_b64"]) == json.dumps(no_org).encode()
    assert empty["key"] == ORG and empty["value"] is None and empty["value_b64"] == ""

    published = asyncio.run(consume_all(settings, settings.topics.ticket_events, 25))
    values = [json.loads(m.value) for m in published]
    assert sorted(v["action"] for v in values) == ["created"] * 20 + ["duplicates_seen"] * 5
    for v in values:  # each message links to the ticket's page
        assert v["ticket_url"].endswith(f"/tickets/{v['ticket_number']}?oid={ORG}"), v["ticket_url"]
    assert {v["ticket_id"] for v in values} == {t["ticket_id"] for t in body["tickets"]}
    assert total() == 20  # the duplicates never became tickets

    services.wait_for(lambda: len(hooks.got) >= 25, 30, "25 webhooks")  # the relay process's other half
    services.wait_for(lambda: len(hooks.patched) >= 10, 30, "10 ExtraHop detection updates")
    hooks.shutdown()
    numbers = {t["detection_id"]: t["ticket_number"] for t in body["tickets"]}
    assert sorted(hooks.patched) == sorted(
        (
            str(d["id"]),
            {"ticket_id": str(numbers[str(d["id"])]), "status": "new", "assignee": None, "resolution": None},
        )
        for d in detections
        if "riskScore" in d
    )
    assert len(hooks.got) == 25 and all(h["Content-Encoding"] == "gzip" for h, _ in hooks.got)
    assert sorted(b["event_id"] for _, b in hooks.got) == sorted(v["event_id"] for v in values)
