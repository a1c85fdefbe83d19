"""Rate limiting, the actor taken from the token, and request hygiene."""

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from projections.registry import all_projections
from services.api.ratelimit import RateLimiter
from services.auth.tokens import PERMISSIONS, TokenService
from services.bootstrap import create_pool
from services.commands.repository import find_ticket_id
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from services.settings import Settings
from tests.conftest import Client, bearer
from tests.integration.support import seed, serve

ORG = "org-h"


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def seeded(pool: db.Pool) -> db.Pool:
    await seed(pool, 2, oid=ORG)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    return pool


@pytest.fixture
async def client(seeded: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    c = await serve(seeded, tokens)
    yield c
    await c.close()


async def test_rate_limit_per_token_with_retry_after(seeded: db.Pool, tokens: TokenService) -> None:
    clock = FrozenClock()
    client = await serve(seeded, tokens, RateLimiter(20, 50, clock=clock))
    try:
        first = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
        second = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
        path = f"/api/v1/tickets?oids={ORG}"
        statuses = [(await client.get(path, headers=first)).status for _ in range(50)]
        assert statuses == [200] * 50  # the burst
        r = await client.get(path, headers=first)
        assert r.status == 429
        assert r.headers["Retry-After"] == "1"
        assert "rate limit" in (await r.json())["error"]
        assert (await client.get(path, headers=second)).status == 200  # per token, not global
        clock.now += 1.0  # 20 requests/s sustained
        statuses = [(await client.get(path, headers=first)).status for _ in range(21)]
        assert statuses == [200] * 20 + [429]
    finally:
        await client.close()


def test_rate_limiter_refills_up_to_the_burst_only() -> None:
    clock = FrozenClock()
    limiter = RateLimiter(20, 50, clock=clock)
    assert all(limiter.take("k") == 0 for _ in range(50))
    assert limiter.take("k") == pytest.approx(0.05)
    clock.now += 3600
    assert sum(limiter.take("k") == 0 for _ in range(60)) == 50


async def test_the_actor_is_the_token_subject(client: Client, seeded: db.Pool, tokens: TokenService) -> None:
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    forged = {"content": "hi", "by": "mallory@example.com"}
    r = await client.post(f"/api/v1/tickets/1/notes?oid={ORG}", json=forged, headers=token)
    assert r.status == 422 and (await r.json())["field"] == "by"
    r = await client.post(f"/api/v1/tickets/1/notes?oid={ORG}", json={"content": "hi"}, headers=token)
    assert r.status == 201, await r.text()
    note = await r.json()
    assert (note["by"], note["content"], note["note_type"]) == ("alice@example.com", "hi", "general")
    async with seeded.acquire() as conn:
        ticket_id = await find_ticket_id(conn, ORG, 1)
        assert ticket_id is not None
        events = await store.read_stream(conn, ticket_id)
    assert [(e.type, e.metadata["actor"]) for e in events] == [
        ("created", "system:ingest"),
        ("note_added", "alice@example.com"),
    ]
    r = await client.get(f"/api/v1/tickets/1?oid={ORG}", headers=token)
    timeline = (await r.json())["events"]
    assert timeline[-1]["by"] == "alice@example.com" and timeline[-1]["type"] == "note_added"
    assert timeline[-1]["metadata"]["content"] == "hi"


@pytest.mark.parametrize(
    ("kwargs", "status", "field"),
    [
        ({"data": b'{"content": "x"}', "headers": {"Content-Type": "text/plain"}}, 415, None),
        ({"data": b"{nope", "headers": {"Content-Type": "application/json"}}, 422, "body"),
        ({"json": {"content": ""}}, 422, "content"),
        ({"json": {"content": "x" * 8193}}, 422, "content"),
        ({"json": {"content": "x", "note_type": "poem"}}, 422, "note_type"),
        ({"json": {"note_type": "general"}}, 422, "content"),
        ({"json": ["content"]}, 422, "body"),
        ({"data": b"x" * (1024 * 1024 + 10), "headers": {"Content-Type": "application/json"}}, 413, None),
    ],
)
async def test_bad_bodies_get_clear_errors(
    client: Client, tokens: TokenService, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    headers = {**token, **kwargs.pop("headers", {})}
    r = await client.post(f"/api/v1/tickets/1/notes?oid={ORG}", headers=headers, **kwargs)
    assert r.status == status, await r.text()
    body = await r.json()
    assert body.get("field") == field
    assert "Traceback" not in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", "/api/v1/tickets/1/notes?oid=org-h", {"json": {"content": "a\u0000b"}}, "content"),
        ("PATCH", "/api/v1/tickets/1?oid=org-h", {"json": {"tags": ["ok", "b\u0000d"]}}, "tags[1]"),
        ("GET", "/api/v1/tickets?oids=org-h&search=a%00b", {}, "search"),
        ("GET", "/api/v1/tickets?oids=org-h&assignee=x,a%00b", {}, "assignee"),
        ("GET", "/api/v1/tickets/1?oid=org-h%00", {}, "oid"),
        (
            "POST",
            "/v1/extension/request/ext-ticketing",
            {
                "data": {
                    "oid": "org-h",
                    "action": "create_ticket",
                    "data": '{"detection": "{\\"detect_id\\": '
                    '\\"d1\\", \\"cat\\": \\"c\\\\u0000\\", \\"routing\\": {\\"oid\\": \\"org-h\\"}}"}',
                }
            },
            "detection",
        ),
    ],
)
async def test_nul_characters_are_refused_naming_the_field(
    client: Client, tokens: TokenService, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    """PostgreSQL stores no NUL in text or jsonb: each of these was a 500 (the note and the patch
    after the ticket's lock was taken), the extension's one too, its detection given as a string."""
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    r = await client.request(method, path, headers=token, **kwargs)
    body = await r.json()
    assert (r.status, body.get("field")) == (422, field), body
    assert "NUL" in body["error"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        (
            "POST",
            "/v1/extension/request/ext-ticketing",
            {
                "data": {
                    "oid": "org-h",
                    "action": "create_ticket",
                    "data": json.dumps({"detection": "[" * 5000}),
                }
            },
            "detection",
        ),
        ("PUT", "/api/v1/config/org-h", {"data": b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"}, "body"),
        ("POST", "/api/v1/tickets/merge", {"data": b'{"oid": ' + b"[" * 5000 + b"]" * 5000 + b"}"}, "body"),
    ],
)
async def test_bodies_nesting_past_the_decoder_are_a_422(
    client: Client, tokens: TokenService, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    """msgspec raises RecursionError past Python's recursion limit: each of these was a 500."""
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    json_type = {} if isinstance(kwargs["data"], dict) else {"Content-Type": "application/json"}
    r = await client.request(method, path, headers={**token, **json_type}, **kwargs)
    body = await r.json()
    assert (r.status, body.get("field")) == (422, field), body


async def test_a_value_the_database_refuses_is_a_422_not_a_500(
    client: Client, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net under the body checks: with the NUL check off, the database's refusal is the client's error."""
    monkeypatch.setattr("services.api.bodies.nul_at", lambda _: None)
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    r = await client.post(f"/api/v1/tickets/1/notes?oid={ORG}", json={"content": "a\u0000b"}, headers=token)
    assert r.status == 422 and "the database refused a value" in (await r.json())["error"]


async def test_notes_on_unknown_tickets_are_404(client: Client, tokens: TokenService) -> None:
    token = bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    r = await client.post(f"/api/v1/tickets/77/notes?oid={ORG}", json={"content": "x"}, headers=token)
    assert r.status == 404


async def test_a_busy_or_closed_database_is_a_503_with_retry_after(
    seeded: db.Pool, tokens: TokenService, database_url: str
) -> None:
    """A rebuild holds the read tables for its whole transaction; the API's lock wait is bounded,
    and a request that runs out of it (or finds no database) is told to retry, never a 500."""
    token = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
    pool = await asyncpg.create_pool(
        database_url, min_size=1, max_size=2, server_settings={"lock_timeout": "200ms"}
    )
    client = await serve(pool, tokens)
    rebuild = await asyncpg.connect(database_url)
    try:
        assert (await client.get(f"/api/v1/tickets?oids={ORG}", headers=token)).status == 200
        async with rebuild.transaction():
            await rebuild.execute("LOCK TABLE tickets IN ACCESS EXCLUSIVE MODE")
            r = await client.get(f"/api/v1/tickets?oids={ORG}", headers=token)
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert "retry" in (await r.json())["error"]
        assert (await client.get(f"/api/v1/tickets?oids={ORG}", headers=token)).status == 200
        await pool.close()
        r = await client.get(f"/api/v1/tickets?oids={ORG}", headers=token)
        assert r.status == 503
    finally:
        await rebuild.close()
        await client.close()
        await pool.close()


async def test_the_api_pool_skips_the_session_reset_but_never_hands_out_an_open_transaction(
    settings: Settings,
) -> None:
    """The API keeps no session state, so its pool skips asyncpg's RESET ALL round trip on
    release; what a cancelled request left open is still rolled back."""
    pool = await create_pool(settings, max_size=1, transaction_state_only=True)
    try:
        conn = await pool.acquire()
        left_open = conn.transaction()
        await left_open.start()  # a request cancelled mid-transaction
        await conn.execute("CREATE TEMP TABLE half_done (x int)")
        await pool.release(conn)
        async with pool.acquire() as again:
            assert not again.is_in_transaction()  # max_size=1: the same connection
            assert await again.fetchval("SELECT to_regclass('pg_temp.half_done')") is None
            await again.execute("SET application_name = 'kept'")  # session state survives: no reset
        async with pool.acquire() as third:
            assert await third.fetchval("SHOW application_name") == "kept"
    finally:
        await pool.close()
