"""Signed webhooks: the README's ten-line receiver verifies every message we send, refuses a
tampered, foreign or stale one, and keeps verifying through a rotation's overlap."""

import gzip
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from services.auth.tokens import TokenService
from services.delivery.signing import HEADER
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import catch_up
from services.outbound.deliveries import Delivery, deliver, enqueue
from services.outbound.webhooks import WEBHOOKS_NAME, Webhooks
from tests.conftest import Client, bearer
from tests.integration.support import configure, seed, serve

ORG = "org-signed"
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver() -> Callable[..., bool]:
    """The README's receiver, run as written."""
    block = next(
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL) if "def verify(" in b
    )
    assert len(block.strip().splitlines()) <= 10
    namespace: dict[str, Any] = {}
    exec(block, namespace)
    return namespace["verify"]  # type: ignore[no-any-return]


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []  # (signature header, raw body as received)

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((request.headers[HEADER], await request.read()))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application(handler_args={"auto_decompress": False})
    app.router.add_post("/hook", r.handle)
    server = TestServer(app)
    await server.start_server()
    yield r, str(server.make_url("/hook"))
    await server.close()


@pytest.fixture
async def api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    client = await serve(pool, tokens)
    client.session.headers.update(
        bearer(tokens.mint("admin@x", {ORG: ["org.conf.get", "org.conf.set"]}, ttl_s=600))
    )
    yield client
    await client.close()


async def send_all(pool: db.Pool) -> None:
    channel = Webhooks()

    async def queue(conn: db.Connection, events: list[RecordedEvent]) -> None:
        await enqueue(conn, channel, events)

    await catch_up(pool, WEBHOOKS_NAME, queue, orgs=channel.orgs)
    async with aiohttp.ClientSession() as session:
        await deliver(pool, channel, Delivery(session, pause_s=0.01))


async def reveal(api: Client, status: int = 200, **body: Any) -> Any:
    r = await api.post(f"/api/v1/config/{ORG}/signing-secret", json=body)
    assert r.status == status, await r.text()
    return await r.json()


async def test_the_readme_receiver_verifies_what_we_send_and_nothing_else(
    pool: db.Pool, api: Client, receiver: tuple[Receiver, str]
) -> None:
    verify = readme_receiver()
    hooks, url = receiver
    await configure(pool, ORG, webhook_url=url)
    await seed(pool, 2, oid=ORG)
    await send_all(pool)  # the first use generates the secret
    first = await reveal(api)
    secret = first["secret"]
    assert len(hooks.got) == 2 and all(verify(h, body, secret) for h, body in hooks.got)
    assert json.loads(gzip.decompress(hooks.got[0][1]))["oid"] == ORG  # signed over the gzipped bytes
    header, body = hooks.got[0]
    assert not verify(header, body + b" ", secret)  # tampered
    assert not verify(header, body, "whsec_someone-else")  # not ours
    old = header.replace(header.split(",")[0], f"t={int(time.time()) - 3600}")
    assert not verify(old, body, secret)  # a replay an hour later
    assert (await reveal(api, 409))["error"].startswith("the signing secret was shown once")
    seen = await (await api.get(f"/api/v1/config/{ORG}/signing-secret")).json()
    assert seen["fingerprint"] == first["fingerprint"] and seen["revealed"] and secret not in json.dumps(seen)

    # Rotation: during the overlap both sign; after one without overlap, the old one no longer does.
    rotated = await reveal(api, rotate=True, overlap_hours=1)
    assert rotated["secret"] != secret and rotated["previous_valid_until"]
    await seed(pool, 3, oid=ORG)  # one more
    await send_all(pool)
    header, body = hooks.got[-1]
    assert (
        header.count("v1=") == 2 and verify(header, body, rotated["secret"]) and verify(header, body, secret)
    )
    again = await reveal(api, rotate=True, overlap_hours=0)
    await seed(pool, 4, oid=ORG)
    await send_all(pool)
    header, body = hooks.got[-1]
    assert (
        header.count("v1=") == 1
        and verify(header, body, again["secret"])
        and not verify(header, body, secret)
    )
    async with pool.acquire() as conn:  # the secret is in org_secrets only
        leaked = await conn.fetchval(
            "SELECT count(*) FROM events WHERE data::text LIKE '%' || $1 || '%'", secret
        )
    assert leaked == 0
