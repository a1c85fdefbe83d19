"""Detection tracking back to ExtraHop: a real HTTP server plays the appliance. Detections arrive
over the Kafka path and the create-issue door, analysts work the tickets through the API, and the
appliance receives exactly the PATCHes the mapping table (docs/integrations.md) predicts, each
detection's in order, after an outage of the appliance too. The appliance's API key shows up
nowhere but in the requests to it."""

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from projections.registry import all_projections
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import catch_up
from services.ingest.pipeline import RawRecord, ingest_batch
from services.outbound.deliveries import ATTEMPTS, Delivery, deliver, enqueue
from services.outbound.extrahop import EXTRAHOP_NAME, ExtraHopTracking
from tests.conftest import Client, bearer
from tests.integration.support import Sink, extrahop, new_key, serve
from tests.integration.test_worktracker import seed_trigger_payload

ORG, QUIET = "eh-track", "eh-quiet"
APPLIANCE_KEY = "appliance-key-Zq81mX0v"  # what the appliance's admin generated for us
Body = dict[str, Any]


class Appliance:
    """ExtraHop's `PATCH /api/v1/detections/{id}`: checks the key, knows some detections."""

    def __init__(self, known: set[str]) -> None:
        self.known = known
        self.down = False
        self.patches: list[tuple[str, Body]] = []  # taken, in the order they were answered
        self.tries = 0
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.tries += 1
        if request.headers.get("Authorization") != f"ExtraHop apikey={APPLIANCE_KEY}":
            return web.json_response({"error": "bad key"}, status=401)
        if self.down:
            return web.Response(status=503)
        detection = request.match_info["id"]
        if detection not in self.known:
            return web.json_response({"error": "no such detection"}, status=404)
        self.patches.append((detection, await request.json()))
        return web.Response(status=204)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/"))

    def of(self, detection: str) -> list[Body]:
        return [b for d, b in self.patches if d == detection]


@pytest.fixture
async def appliance() -> AsyncIterator[Appliance]:
    a = Appliance({"4437", "4438", "5001"})
    app = web.Application()
    app.router.add_patch("/api/v1/detections/{id}", a.handle)
    a.server = TestServer(app)
    await a.server.start_server()
    yield a
    await a.server.close()


class Api:
    """The API as clients see it, every answer kept (to look for the key in)."""

    def __init__(self, pool: db.Pool, client: Client, admin: dict[str, str]) -> None:
        self.pool, self.client, self.admin = pool, client, admin
        self.answers: list[str] = []

    async def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Any:
        r = await self.client.request(method, path, json=body, headers=headers or self.admin)
        text = await r.text()
        self.answers.append(text)
        assert r.status < 300, (r.status, text)
        return json.loads(text) if text else None

    async def number_of(self, detection: str) -> int:
        """The number of the ticket the detection opened."""
        for p in all_projections():
            await catch_up(self.pool, p.name, p.apply)
        async with self.pool.acquire() as conn:
            number: int = await conn.fetchval(
                "SELECT ticket_number FROM tickets WHERE oid = $1 AND detection_id = $2", ORG, detection
            )
        return number


@pytest.fixture
async def api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Api]:
    client = await serve(pool, tokens)
    perms = ["investigation.get", "investigation.set", "org.conf.get", "org.conf.set"]
    admin = bearer(tokens.mint("sally@soc.example", {ORG: perms}, ttl_s=600))
    yield Api(pool, client, admin)
    await client.close()


CHANNEL = ExtraHopTracking()


async def queue(conn: db.Connection, events: list[RecordedEvent]) -> None:
    await enqueue(conn, CHANNEL, events)


async def sync(pool: db.Pool, delivery: Delivery, **kwargs: float) -> int:
    """What the relay process does: queue what the log holds, then one delivery pass."""
    await catch_up(pool, EXTRAHOP_NAME, queue, orgs=CHANNEL.orgs)
    return await deliver(pool, CHANNEL, delivery, **kwargs)


async def from_kafka(pool: db.Pool, oid: str, *ids: int) -> None:
    """ExtraHop detections on the detections topic, keyed by the org (the ingest's own path)."""
    records = [
        RawRecord("detections", 0, i, oid.encode(),
                  json.dumps({"id": d, "type": f"type-{d}", "riskScore": 60}).encode())
        for i, d in enumerate(ids)
    ]  # fmt: skip
    await ingest_batch(pool, make_handler(), records, Sink(), default_oid=None)


def T(number: int, status: str, assignee: str | None = None, resolution: str | None = None) -> Body:
    return {"ticket_id": str(number), "status": status, "assignee": assignee, "resolution": resolution}


async def test_the_appliance_receives_what_the_mapping_table_predicts_in_order_through_an_outage(
    pool: db.Pool, api: Api, appliance: Appliance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    config = await api.call(
        "PUT", f"/api/v1/config/{ORG}", {"extrahop": {"url": appliance.url, "api_key": APPLIANCE_KEY}}
    )
    assert config["extrahop"]["enabled"] and config["extrahop"]["api_key_fingerprint"].startswith("sha256:")
    assert "api_key" not in config["extrahop"]
    key = await new_key(pool, ORG, "extrahop-prod")

    # In: two detections over Kafka, one through the create-issue door; a second firing adds nothing.
    await from_kafka(pool, ORG, 4437, 4438)
    await from_kafka(pool, QUIET, 4437)  # another org, no tracking
    payload = seed_trigger_payload(5001, risk=83)
    await api.call("POST", "/rest/api/issue", payload, headers=extrahop(key))
    await api.call("POST", "/rest/api/issue", payload, headers=extrahop(key))
    await api.call("POST", "/rest/api/issue", seed_trigger_payload(4437), headers=extrahop(key))
    a, b, c = [await api.number_of(d) for d in ("4437", "4438", "5001")]

    async with aiohttp.ClientSession() as session:
        delivery = Delivery(session, timeout_s=5, pause_s=0.01)
        assert await sync(pool, delivery) == 3
        assert appliance.patches == [
            ("4437", T(a, "new")),
            ("4438", T(b, "new")),
            ("5001", T(c, "new", "escalations_team")),  # created and assigned in one change
        ]

        # Analysts work the tickets.
        await api.call(
            "PATCH", f"/api/v1/tickets/{a}?oid={ORG}", {"status": "acknowledged", "assignee": "alice"}
        )
        await api.call(
            "PATCH", f"/api/v1/tickets/{a}?oid={ORG}", {"summary": "lateral movement", "tags": ["x"]}
        )
        await api.call("PATCH", f"/api/v1/tickets/{a}?oid={ORG}", {"status": "escalated"})
        await api.call("PATCH", f"/api/v1/tickets/{a}?oid={ORG}", {"status": "in_progress"})  # looks the same
        await api.call(
            "POST",
            "/api/v1/tickets/merge",
            {"oid": ORG, "target_ticket_number": a, "source_ticket_numbers": [b]},
        )
        await api.call(
            "PATCH",
            f"/api/v1/tickets/{a}?oid={ORG}",
            {"status": "resolved", "classification": "true_positive"},
        )
        await sync(pool, delivery)
        assert appliance.of("4437")[1:] == [
            T(a, "acknowledged", "alice"),
            T(a, "in_progress", "alice"),
            T(a, "closed", "alice", "action_taken"),
        ]
        assert appliance.of("4438")[1:] == [  # merged into a: now a's ticket number
            T(a, "in_progress", "alice"),
            T(a, "closed", "alice", "action_taken"),
        ]

        # The appliance is down: the updates wait, in order, and the admin sees why.
        appliance.down = True
        await api.call(
            "PATCH", f"/api/v1/tickets/{c}?oid={ORG}", {"status": "acknowledged", "assignee": "bob"}
        )
        await api.call(
            "PATCH",
            f"/api/v1/tickets/{c}?oid={ORG}",
            {"status": "closed", "classification": "false_positive"},
        )
        taken = len(appliance.patches)
        assert await sync(pool, delivery) == 0
        assert appliance.tries >= ATTEMPTS and len(appliance.patches) == taken
        seen = await api.call("GET", f"/api/v1/config/{ORG}/extrahop")
        assert (seen["url"], seen["waiting"], seen["last_error"]) == (
            appliance.url.rstrip("/"),
            2,
            "HTTP 503",
        )
        appliance.down = False
        assert await sync(pool, delivery, retry_after_s=0) == 2
        assert appliance.of("5001")[1:] == [
            T(c, "acknowledged", "bob"),
            T(c, "closed", "bob", "no_action_taken"),
        ]

        # A detection the appliance does not know is refused, counted and skipped.
        await from_kafka(pool, ORG, 9999)
        await sync(pool, delivery)
        seen = await api.call("GET", f"/api/v1/config/{ORG}/extrahop")
        assert (seen["waiting"], seen["refused"], seen["last_refusal"]) == (0, 1, "HTTP 404")

        # Turned off: nothing more is queued.
        await api.call("PUT", f"/api/v1/config/{ORG}", {"extrahop": {"enabled": False}})
        await api.call(
            "PATCH", f"/api/v1/tickets/{await api.number_of('9999')}?oid={ORG}", {"assignee": "carol"}
        )
        taken = len(appliance.patches)
        await sync(pool, delivery)
        assert len(appliance.patches) == taken

    assert [d for d, _ in appliance.patches].count("4437") == 4  # the other org's 4437 never went

    # The key: in the requests to the appliance only.
    answers = "\n".join(api.answers)
    assert APPLIANCE_KEY not in answers and APPLIANCE_KEY not in caplog.text
    assert await tables_holding(pool, APPLIANCE_KEY) == ["org_secrets"]


async def tables_holding(pool: db.Pool, text: str) -> list[str]:
    """Every table of the database whose rows mention `text`, the event store's included."""
    async with pool.acquire() as conn:
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
            )
        ]
        found = []
        for table in tables:
            hit = await conn.fetchval(
                f'SELECT count(*) FROM "{table}" t WHERE position($1 in t::text) > 0'
                f" OR position($2 in t::text) > 0",
                text,
                text.encode().hex(),  # bytea columns show as hex
            )
            if hit:
                found.append(table)
    return found
