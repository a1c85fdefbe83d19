"""Webhooks: delivered gzipped, in order per org, and an endpoint that is down holds up nothing else."""

import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.configs import update_config
from services.eventstore.subscription import catch_up
from services.handlers import CommandContext
from services.tokens import TokenService
from services.webhooks import ATTEMPTS, QUEUED, WEBHOOKS_NAME, Delivery, Webhooks, resend
from tests.conftest import bearer
from tests.integration.test_api_read import serve
from tests.integration.test_projection import seed

ADMIN = CommandContext(actor="admin@example.com")


class Receiver:
    """An HTTP endpoint that answers with the statuses it is told to, then 200."""

    def __init__(self) -> None:
        self.statuses: list[int] = []
        self.answers: list[int] = []
        self.got: list[tuple[dict[str, str], dict[str, Any]]] = []  # every request, answered or not
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        self.answers.append(status)
        self.got.append((dict(request.headers), json.loads(gzip.decompress(await request.read()))))
        return web.Response(status=status)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    def taken(self) -> list[dict[str, Any]]:
        """The messages answered 200: the receiver's log less the refused and failed tries."""
        return [b for (_, b), status in zip(self.got, self.answers, strict=True) if status == 200]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    app = web.Application(handler_args={"auto_decompress": False})  # to see the bytes as sent
    app.router.add_post("/hook", r.handle)
    r.server = TestServer(app)
    await r.server.start_server()
    yield r
    await r.server.close()


@pytest.fixture
async def delivery() -> AsyncIterator[Delivery]:
    async with aiohttp.ClientSession() as session:
        yield Delivery(session, timeout_s=5, pause_s=0.01)


async def hook(pool: asyncpg.Pool, oid: str, url: str | None) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, oid, {"webhook_url": url}, ADMIN, datetime.now(UTC))


async def waiting(pool: asyncpg.Pool) -> list[tuple[str, int, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT oid, attempts, last_error FROM webhook_failures ORDER BY oid, position"
        )
    return [tuple(r) for r in rows]


async def test_each_ticket_event_of_an_org_with_a_webhook_is_posted_gzipped_once(
    pool: asyncpg.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    await hook(pool, "org-w", receiver.url)
    await seed(pool, 3, oid="org-w")
    await seed(pool, 2, oid="org-quiet")  # no webhook
    handle = Webhooks(delivery).publish
    assert await catch_up(pool, WEBHOOKS_NAME, handle) == 6  # the config event and 5 tickets
    assert await catch_up(pool, WEBHOOKS_NAME, handle) == 0
    assert len(receiver.got) == 3
    positions = []
    for headers, body in receiver.got:
        assert headers["Content-Encoding"] == "gzip" and headers["Content-Type"] == "application/json"
        assert headers["X-Ticketing-Event-Id"] == body["event_id"]
        assert (body["oid"], body["action"], body["by"]) == ("org-w", "created", "system:ingest")
        assert {"ticket_id", "ticket_number", "ts", "metadata", "version"} <= set(body)
        positions.append(body["position"])
    assert positions == sorted(positions)
    assert await waiting(pool) == []


async def test_an_endpoint_that_is_down_gets_its_events_later_in_order_and_holds_up_no_one(
    pool: asyncpg.Pool, receiver: Receiver, delivery: Delivery, tokens: TokenService
) -> None:
    await hook(pool, "org-down", receiver.url)
    await hook(pool, "org-up", receiver.url + "?up")
    handle = Webhooks(delivery).publish
    await catch_up(pool, WEBHOOKS_NAME, handle)
    receiver.statuses = [503] * ATTEMPTS  # org-down's first event fails every attempt
    await seed(pool, 3, oid="org-down")
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert len(receiver.got) == ATTEMPTS  # the first event's tries; the other two did not wait on it
    assert await waiting(pool) == [
        ("org-down", ATTEMPTS, "HTTP 503"),
        ("org-down", 0, QUEUED),
        ("org-down", 0, QUEUED),
    ]
    await seed(pool, 2, oid="org-up")
    await seed(pool, 4, oid="org-down")  # one new (seeds repeat per org), queued behind, untried
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert [b["oid"] for b in receiver.taken()] == ["org-up", "org-up"]
    assert len(await waiting(pool)) == 4
    api = await serve(pool, tokens)
    try:  # what the org's admin sees
        admin = bearer(tokens.mint("admin@x", {"org-down": ["org.conf.get"]}, ttl_s=60))
        seen = await (await api.get("/api/v1/config/org-down/webhook", headers=admin)).json()
        assert (seen["webhook_url"], seen["waiting"], seen["last_error"]) == (receiver.url, 4, "HTTP 503")
        assert seen["first_failed_at"] and seen["last_attempt_at"]
        other = await api.get("/api/v1/config/org-up/webhook", headers=admin)
        assert other.status == 404  # another org's: to this token it does not exist
    finally:
        await api.close()
    receiver.statuses = [502] * ATTEMPTS  # the resender fails too: the org stops at its first
    assert await resend(pool, delivery) == 0
    assert (await waiting(pool))[0][1:] == (2 * ATTEMPTS, "HTTP 502")
    assert await resend(pool, delivery) == 4  # the endpoint is back
    down = [b for b in receiver.taken() if b["oid"] == "org-down"]
    assert [b["position"] for b in down] == sorted(b["position"] for b in down) and len(down) == 4
    assert await waiting(pool) == []
    await seed(pool, 8, oid="org-down")  # four new
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert len([b for b in receiver.taken() if b["oid"] == "org-down"]) == 8  # straight through again


async def test_a_message_the_endpoint_refuses_is_skipped_and_a_removed_webhook_drops_its_queue(
    pool: asyncpg.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    await hook(pool, "org-r", receiver.url)
    handle = Webhooks(delivery).publish
    await catch_up(pool, WEBHOOKS_NAME, handle)
    receiver.statuses = [400]
    await seed(pool, 2, oid="org-r")
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert receiver.answers == [400, 200]  # refused once, not retried; the next one went through
    assert await waiting(pool) == []
    receiver.statuses = [500] * ATTEMPTS
    await seed(pool, 4, oid="org-r")  # two new
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert len(await waiting(pool)) == 2
    await hook(pool, "org-r", None)
    assert await resend(pool, delivery) == 0
    assert await waiting(pool) == []


async def test_a_slow_endpoint_gets_the_rest_of_a_batch_from_the_resender(
    pool: asyncpg.Pool, receiver: Receiver, delivery: Delivery
) -> None:
    """The subscription's transaction is everyone's: one org's slow endpoint may use a budget of it."""
    await hook(pool, "org-slow", receiver.url)
    handle = Webhooks(delivery, budget_s=0.0).publish  # spent by the first POST
    await catch_up(pool, WEBHOOKS_NAME, handle)
    await seed(pool, 4, oid="org-slow")
    await catch_up(pool, WEBHOOKS_NAME, handle)
    assert len(receiver.got) == 1 and [w[2] for w in await waiting(pool)] == [QUEUED] * 3
    assert await resend(pool, delivery, budget_s=0.0) == 1  # the resender's pass has a budget too
    assert await resend(pool, delivery) == 2
    positions = [b["position"] for b in receiver.taken()]
    assert positions == sorted(positions) and len(positions) == 4
