"""One tenant cannot starve the others: a request gets a connection within a bounded wait and
runs within a statement timeout, else a 503 with Retry-After; readiness does not depend on the
requests' pool being free."""

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.api.main import open_pools
from services.api.ratelimit import RateLimiter
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.eventstore import db
from services.settings import Settings
from tests.conftest import Client, bearer

ORG = "limits-org"


@pytest.fixture
async def api(
    service_env: dict[str, str], tokens: TokenService
) -> AsyncIterator[tuple[Client, db.Pool, Settings]]:
    settings = Settings.from_env(
        {**service_env, "TICKETING_DB_POOL_MAX": "2", "TICKETING_API_STATEMENT_TIMEOUT_MS": "300",
         "TICKETING_DB_ACQUIRE_TIMEOUT_S": "0.5"}
    )  # fmt: skip
    placement, probe = await open_pools(settings)  # (its pools bounded, as the API process's)
    pool = placement.home
    app = create_app(
        pool, make_handler(), tokens, RateLimiter(1e6, 10**6), probe_pool=probe, placement=placement
    )  # fmt: skip
    client = TestClient(TestServer(app))
    await client.start_server()
    client.session.headers.update(
        bearer(tokens.mint("a@example.com", {ORG: ["investigation.get"]}, ttl_s=600))
    )
    try:
        yield client, pool, settings
    finally:
        await client.close()
        await probe.close()
        await pool.close()


async def test_the_requests_pool_runs_under_the_statement_timeout(
    api: tuple[Client, db.Pool, Settings],
) -> None:
    _, pool, _ = api
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW statement_timeout") == "300ms"
        assert await conn.fetchval("SHOW lock_timeout") == "5s"


async def test_a_saturated_pool_is_a_503_and_the_instance_stays_ready(
    api: tuple[Client, db.Pool, Settings],
) -> None:
    client, pool, _ = api
    # every connection busy with someone else (the live stream's feed lets its own go once it
    # cannot get a second one within the bounded wait)
    held = [await pool.acquire(timeout=10), await pool.acquire(timeout=10)]
    try:
        r = await asyncio.wait_for(client.get(f"/api/v1/tickets?oids={ORG}"), 10)
        assert r.status == 503 and r.headers["Retry-After"] == "1"
        assert "unavailable or busy" in (await r.json())["error"]
        ready = await asyncio.wait_for(client.get("/readyz"), 10)
        assert ready.status == 200, await ready.text()
    finally:
        for conn in held:
            await pool.release(conn)
    r = await client.get(f"/api/v1/tickets?oids={ORG}")
    assert r.status == 200


async def test_a_statement_past_the_timeout_is_a_503(
    api: tuple[Client, db.Pool, Settings], caplog: pytest.LogCaptureFixture
) -> None:
    client, _, settings = api
    blocker = await asyncpg.connect(settings.database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            with caplog.at_level(logging.WARNING, logger="services.api.errors"):
                r = await asyncio.wait_for(client.get(f"/api/v1/tickets?oids={ORG}"), 10)
    finally:
        await blocker.close()
    assert r.status == 503 and r.headers["Retry-After"] == "1"
    assert any("statement timeout" in rec.getMessage() for rec in caplog.records)
