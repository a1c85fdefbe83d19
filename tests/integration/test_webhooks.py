"""Webhooks: queued with the checkpoint, delivered gzipped outside any transaction, each ticket's
events in order, and an endpoint that is down or slow holds up nothing else."""

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from domain.commands import TicketChanges, UpdateTicket
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands.configs import update_config
from services.commands.envelope import CommandContext
from services.commands.handlers import execute_one
from services.delivery.queue import status
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import catch_up
from services.outbound.deliveries import ATTEMPTS, Delivery, deliver, enqueue
from services.outbound.webhooks import WEBHOOKS_NAME, Webhooks
from tests.conftest import bearer
from tests.integration.support import seed, serve

ADMIN = CommandContext(actor="admin@example.com")


class Receiver:
    """HTTP endpoints, one per org (`/hook/<oid>`): each answers 200, or what it is set to."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}  # org -> the status its endpoint answers for now
        self.refuse_once: set[str] = set()  # orgs whose endpoint answers 400 to the next request only
        self.slow_early: set[str] = set()  # orgs whose endpoint takes longer over a ticket's earlier events
        self.delay: dict[str, float] = {}  # orgs whose endpoint takes this long to answer
        self.got: list[tuple[str, int, dict[str, str], dict[str, Any]]] = []  # every request
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        oid = request.match_info["oid"]
        status = self.status.get(oid, 200)
        if oid in self.refuse_once:
            self.refuse_once.discard(oid)
            status = 400
        body = json.loads(gzip.decompress(await request.read()))
        await asyncio.sleep(self.delay.get(oid, 0.0))
        if oid in self.slow_early:  # so an event sent before the previous one's answer would overtake it
            await asyncio.sleep(max(0, 8 - body["version"]) * 0.005)
        self.got.append((oid, status, dict(request.headers), body))  # in the order they were answered
        return web.Response(status=status)

    def url(self, oid: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(f"/hook/{oid}"))

    def taken(self, oid: str) -> list[dict[str, Any]]:
        """The messages the org's endpoint answered 200."""
        return [b for o, status, _, b in self.got if o == oid and status == 200]

    def tries(self, oid: str) -> int:
        return sum(1 for o, *_ in self.got if o == oid)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application(handler_args={"auto_decompress": False})  # to see the bytes as sent
    app.router.add_post("/hook/{oid}", r.handle)
    r.server = TestServer(app)
    await r.server.start_server()
    yield r
    await r.server.close()


@pytest.fixture
async def delivery() -> AsyncIterator[Delivery]:
    async with aiohttp.ClientSession() as session:
        yield Delivery(session, timeout_s=5, pause_s=0.01)


async def hook(pool: db.Pool, oid: str, url: str | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, oid, {"webhook_url": url}, ADMIN, datetime.now(UTC))


WEBHOOKS = Webhooks("https://soc.example/tickets/$ticket_id?oid=$oid")


async def publish(conn: db.Connection, events: list[RecordedEvent]) -> None:
    await enqueue(conn, WEBHOOKS, events)


async def waiting(pool: db.Pool) -> list[tuple[str, int, str | None]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT oid, attempts, last_error FROM delivery_queue WHERE channel = 'webhook' ORDER BY oid, position"
        )
    return [tuple(r) for r in rows]


async def queue_and_deliver(pool: db.Pool, delivery: Delivery, **kwargs: float) -> int:
    """What the relay process's two webhook loops do: queue what the log holds, then one delivery pass."""
    await catch_up(pool, WEBHOOKS_NAME, publish, orgs=WEBHOOKS.orgs)
    return await deliver(pool, WEBHOOKS, delivery, **kwargs)


async def test_each_ticket_event_of_an_org_with_a_webhook_is_posted_gzipped_once(
    pool: db.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    await hook(pool, "org-w", receiver.url("org-w"))
    await seed(pool, 3, oid="org-w")
    await seed(pool, 2, oid="org-quiet")  # no webhook
    # the config event and org-w's 3 tickets: the subscription never reads org-quiet's events
    assert await catch_up(pool, WEBHOOKS_NAME, publish, orgs=WEBHOOKS.orgs) == 4
    assert receiver.got == [] and len(await waiting(pool)) == 3  # queued with the checkpoint, not sent
    assert await deliver(pool, WEBHOOKS, delivery) == 3
    assert await catch_up(pool, WEBHOOKS_NAME, publish, orgs=WEBHOOKS.orgs) == 0
    assert await deliver(pool, WEBHOOKS, delivery) == 0
    assert len(receiver.got) == 3
    for oid, _, headers, body in receiver.got:
        assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/json"
        assert headers["X-Ticketing-Event-Id"] == body["event_id"]
        assert (oid, body["oid"], body["action"], body["by"]) == (
            "org-w",
            "org-w",
            "created",
            "system:ingest",
        )
        assert {"ticket_id", "ticket_number", "ts", "metadata", "version", "position"} <= set(body)
        assert body["ticket_url"] == f"https://soc.example/tickets/{body['ticket_number']}?oid=org-w"
    assert await waiting(pool) == []


async def test_each_ticket_gets_its_events_in_order(
    pool: db.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    """Several tickets of an org go at once; the events of one ticket never overtake each other."""
    await hook(pool, "org-o", receiver.url("org-o"))
    receiver.slow_early.add("org-o")
    await seed(pool, 12, oid="org-o")
    handler = make_handler()
    async with pool.acquire() as conn:
        ids = [r[0] for r in await conn.fetch("SELECT ticket_id FROM ticket_index WHERE oid = 'org-o'")]
    for move in ("acknowledged", "in_progress", "resolved"):
        for tid in ids:
            await execute_one(pool, handler, UpdateTicket(tid, TicketChanges(status=move)), ADMIN)
    assert await queue_and_deliver(pool, delivery) == len(receiver.got) and await waiting(pool) == []
    versions: dict[str, list[int]] = {}
    for body in receiver.taken("org-o"):
        versions.setdefault(body["ticket_id"], []).append(body["version"])
    assert len(versions) == 12 and all(v == sorted(v) and len(v) >= 6 for v in versions.values()), versions


async def test_an_endpoint_that_is_down_gets_its_events_later_in_order_and_holds_up_no_one(
    pool: db.Pool, receiver: Receiver, delivery: Delivery, tokens: TokenService
) -> None:
    await hook(pool, "org-down", receiver.url("org-down"))
    await hook(pool, "org-up", receiver.url("org-up"))
    receiver.status["org-down"] = 503
    await seed(pool, 3, oid="org-down")
    await queue_and_deliver(pool, delivery)
    assert receiver.tries("org-down") <= 3 * ATTEMPTS and receiver.taken("org-down") == []
    first = await waiting(pool)
    assert len(first) == 3 and ("org-down", ATTEMPTS, "HTTP 503") in first
    await seed(pool, 2, oid="org-up")
    tries = receiver.tries("org-down")
    await seed(pool, 4, oid="org-down")  # one new (seeds repeat per org), queued behind, untried
    await queue_and_deliver(pool, delivery)  # org-down failed a moment ago: not tried again yet
    assert len(receiver.taken("org-up")) == 2 and receiver.tries("org-down") == tries
    assert len(await waiting(pool)) == 4 and (await waiting(pool))[-1] == ("org-down", 0, None)
    api = await serve(pool, tokens)
    try:  # what the org's admin sees
        admin = bearer(tokens.mint("admin@x", {"org-down": ["org.conf.get"]}, ttl_s=60))
        seen = await (await api.get("/api/v1/config/org-down/webhook", headers=admin)).json()
        assert (seen["url"], seen["waiting"], seen["last_error"]) == (
            receiver.url("org-down"),
            4,
            "HTTP 503",
        )
        assert seen["first_failed_at"] and seen["last_attempt_at"]
        other = await api.get("/api/v1/config/org-up/webhook", headers=admin)
        assert other.status == 404  # another org's: to this token it does not exist
    finally:
        await api.close()
    assert await deliver(pool, WEBHOOKS, delivery, retry_after_s=0) == 0  # due again, still down
    assert max(w[1] for w in await waiting(pool)) == 2 * ATTEMPTS
    del receiver.status["org-down"]
    assert await deliver(pool, WEBHOOKS, delivery, retry_after_s=0) == 4  # the endpoint is back
    assert len({b["event_id"] for b in receiver.taken("org-down")}) == 4
    assert await waiting(pool) == []
    await seed(pool, 8, oid="org-down")  # four new
    assert await queue_and_deliver(pool, delivery) == 4  # straight through again
    assert len(receiver.taken("org-down")) == 8


async def test_a_message_the_endpoint_refuses_is_skipped_and_a_removed_webhook_drops_its_queue(
    pool: db.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    await hook(pool, "org-r", receiver.url("org-r"))
    receiver.refuse_once.add("org-r")
    await seed(pool, 2, oid="org-r")
    await queue_and_deliver(pool, delivery)
    assert sorted(status for _, status, *_ in receiver.got) == [200, 400]  # refused once, not retried
    assert await waiting(pool) == []
    async with pool.acquire() as conn:
        seen = await status(conn, WEBHOOKS.name, "org-r")
    assert (seen.refused, seen.last_refusal, seen.waiting) == (1, "HTTP 400", 0)  # recorded
    receiver.status["org-r"] = 500
    await seed(pool, 4, oid="org-r")  # two new
    await queue_and_deliver(pool, delivery)
    assert len(await waiting(pool)) == 2
    await hook(pool, "org-r", None)
    assert await queue_and_deliver(pool, delivery, retry_after_s=0) == 0
    assert await waiting(pool) == []


async def test_a_slow_endpoint_never_holds_a_transaction_and_meets_a_hard_deadline(
    pool: db.Pool, receiver: Receiver
) -> None:
    """Deliveries used to run inside the subscription's transaction, which a slow endpoint held
    open for the whole batch. Now the subscription only queues, and each delivery, retries
    included, ends at its deadline."""
    await hook(pool, "org-slow", receiver.url("org-slow"))
    receiver.delay["org-slow"] = 2.0
    await seed(pool, 3, oid="org-slow")
    assert await catch_up(pool, WEBHOOKS_NAME, publish, orgs=WEBHOOKS.orgs) == 4  # no POST in there
    assert receiver.got == [] and len(await waiting(pool)) == 3
    seen_open: list[int] = []

    async def transactions_open() -> None:  # what the database sees while the POSTs hang
        await asyncio.sleep(0.2)
        async with pool.acquire() as conn:
            seen_open.append(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND state LIKE 'idle in transaction%'"
                )
            )

    async with aiohttp.ClientSession() as session:
        quick = Delivery(session, timeout_s=10, pause_s=0.01, deadline_s=0.5)
        delivered, _ = await asyncio.gather(deliver(pool, WEBHOOKS, quick), transactions_open())
    assert delivered == 0 and seen_open == [0]
    assert await waiting(pool) == [("org-slow", ATTEMPTS, "timed out")] * 3


async def test_the_org_sees_error_classes_not_the_clients_words(
    pool: db.Pool, tokens: TokenService, delivery: Delivery
) -> None:
    """A closed port answered 'Cannot connect to host 127.0.0.1:<port> ... Connect call failed':
    an admin could map the relay's network through the status route. Now only the class shows."""
    from services.devstack.embedded import free_port

    port = free_port()  # nothing listens there
    await hook(pool, "scan-org", f"http://127.0.0.1:{port}/admin")
    await seed(pool, 1, oid="scan-org")
    await queue_and_deliver(pool, delivery)
    client = await serve(pool, tokens)
    try:
        token = tokens.mint("admin@example.com", {"scan-org": ["org.conf.get"]}, ttl_s=600)
        r = await client.get("/api/v1/config/scan-org/webhook", headers=bearer(token))
        seen = await r.json()
    finally:
        await client.close()
    assert seen["waiting"] >= 1
    assert seen["last_error"] == "could not reach the endpoint"
    assert str(port) not in seen["last_error"] and "Connect" not in seen["last_error"]
