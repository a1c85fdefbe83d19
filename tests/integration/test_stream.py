"""The live stream (issue 33): `GET /api/v1/stream?oids=` sends each ticket event of those orgs
(and no other org's) once the tickets projection has it, with its log position as the id; `Last-Event-ID` resumes
without a gap or a repeat; the list's auth and org scoping hold; one token has a bounded number of
open streams."""

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientResponse

from projections.tickets import TicketsProjection
from services.api import stream
from services.auth import credentials
from services.auth.tokens import TokenService
from services.eventstore import db
from services.eventstore.postgres import shard_count
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import ingest, lc, serve

A, B = "stream-a", "stream-b"


async def events_of(resp: ClientResponse, n: int) -> list[dict[str, Any]]:
    """The next `n` events of a stream: each {id, event, data}."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with asyncio.timeout(10):
        while len(out) < n:
            line = (await resp.content.readline()).decode().rstrip("\r\n")
            if line == "":
                if current:
                    out.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = json.loads(value) if name == "data" else value
    return out


async def stored(pool: db.Pool, oid: str, after: int = 0) -> list[tuple[int, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT position, type FROM events WHERE metadata->>'oid' = $1 AND position > $2"
            " AND type NOT IN ('config_updated') ORDER BY position",
            oid,
            after,
        )
    return [(r[0], r[1]) for r in rows]


async def ingest_and_project(pool: db.Pool, detections: list[dict[str, Any]], first_offset: int = 0) -> None:
    await ingest(pool, detections, first_offset=first_offset)
    p = TicketsProjection()
    await catch_up(pool, p.name, p.apply)


def at(e: dict[str, Any]) -> int:
    """The position of a streamed event, checked against its id: the positions reached in each shard
    of the log, of which the event's own is one (with one shard, the id is the position)."""
    position: int = e["data"]["position"]
    reached = [int(p) for p in e["id"].split(".")]
    assert position in reached and (len(reached) > 1 or reached == [position]), e["id"]
    return position


async def open_stream(client: Client, token: str, oids: str, last: int | str | None = None) -> ClientResponse:
    headers = {
        "Authorization": f"Bearer {token}",
        **({"Last-Event-ID": str(last)} if last is not None else {}),
    }
    return await client.get(f"/api/v1/stream?oids={oids}", headers=headers)


async def test_a_stream_sends_its_orgs_events_live_and_resumes_without_gap_or_repeat(
    pool: db.Pool, tokens: TokenService
) -> None:
    client = await serve(pool, tokens)
    token = tokens.mint("ana@x", {A: ["investigation.get"], B: ["investigation.get"]}, ttl_s=600)
    try:
        resp = await open_stream(client, token, A)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        await asyncio.sleep(0.3)  # joined the feed
        await ingest(pool, [lc(A, i, cat=f"a{i}") for i in range(3)] + [lc(B, 0, cat="b")])
        with pytest.raises(TimeoutError):  # appended, not yet in the read model: not yet told
            async with asyncio.timeout(1.5):
                await resp.content.readline()
        p = TicketsProjection()
        await catch_up(pool, p.name, p.apply)
        got = await events_of(resp, 3)
        want = await stored(pool, A)
        assert [(at(e), e["data"]["action"]) for e in got] == want == [(p, "created") for p, _ in want]
        assert {e["event"] for e in got} == {"ticket"} and {e["data"]["oid"] for e in got} == {A}
        last, seen = got[1]["id"], at(got[1])  # the client saw two, then lost its connection
        resp.close()
        await ingest_and_project(pool, [lc(A, 10 + i, cat=f"c{i}") for i in range(4)], first_offset=100)
        resumed = await open_stream(client, token, A, last)
        await asyncio.sleep(0.3)
        await ingest_and_project(
            pool, [lc(A, 20, cat="d")], first_offset=200
        )  # and one more while it streams
        want = await stored(pool, A, seen)
        got = await events_of(resumed, len(want))
        assert [(at(e), e["data"]["action"]) for e in got] == want and len(want) == 6
        with_b = await open_stream(client, token, f"{A},{B}", 0)  # from the start: both orgs
        both = sorted((await stored(pool, A)) + (await stored(pool, B)))
        read = [at(e) for e in await events_of(with_b, len(both))]
        async with pool.acquire() as conn:
            shards = await shard_count(conn)
        assert (read if shards == 1 else sorted(read)) == [p for p, _ in both]  # (shard by shard)
        resumed.close()
        with_b.close()
        # a Last-Event-ID ahead of this process's feed (another API process sent it): nothing twice
        async with pool.acquire() as conn:
            head = await conn.fetchval("SELECT max(position) FROM events")
        ahead = await open_stream(client, token, A, ".".join([str(head + 2)] * shards))
        await asyncio.sleep(0.3)
        await ingest_and_project(pool, [lc(A, 30 + i, cat=f"e{i}") for i in range(3)], first_offset=300)
        [only] = await events_of(ahead, 1)
        assert at(only) == head + 3
        # its id never goes back below what the client said it had, in any shard of the log
        assert all(int(p) >= head + 2 for p in only["id"].split("."))
        ahead.close()
    finally:
        await client.close()


async def test_a_stream_keeps_the_lists_auth_and_bounds_each_tokens_streams(
    pool: db.Pool, tokens: TokenService
) -> None:
    client = await serve(pool, tokens)
    token = tokens.mint("bo@x", {A: ["investigation.get"]}, ttl_s=600)
    try:
        assert (await client.get(f"/api/v1/stream?oids={A}")).status == 401
        refused = await open_stream(client, token, f"{A},{B}")
        assert refused.status == 403 and B in (await refused.json())["error"]
        bad = await client.get(f"/api/v1/stream?oids={A}", headers={**bearer(token), "Last-Event-ID": "x1"})
        assert bad.status == 422 and (await bad.json())["field"] == "Last-Event-ID"
        streams = [await open_stream(client, token, A) for _ in range(5)]
        assert [s.status for s in streams] == [200] * 5
        sixth = await open_stream(client, token, A)
        assert sixth.status == 429, await sixth.text()
        streams[0].close()
        await asyncio.sleep(0.3)  # the server sees it gone
        again = await open_stream(client, token, A)
        assert again.status == 200
        for s in [*streams[1:], again]:
            s.close()
    finally:
        await client.close()


async def test_a_stream_that_falls_behind_is_reset_and_one_whose_token_is_revoked_ends(
    pool: db.Pool, tokens: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "QUEUED_MAX", 5)
    monkeypatch.setattr(stream, "HEARTBEAT_S", 0.5)
    client = await serve(pool, tokens)
    token = tokens.mint("cy@x", {A: ["investigation.get"]}, ttl_s=600)
    admin = tokens.mint("lead@x", {A: ["org.conf.set"]}, ttl_s=600)
    async with pool.acquire() as conn:
        jti = await credentials.record(conn, token, "test")
    try:
        slow = await open_stream(client, token, A)
        await asyncio.sleep(0.3)
        await ingest_and_project(pool, [lc(A, i, cat=f"burst{i}") for i in range(20)])  # one read: 20 > 5
        [reset] = await events_of(slow, 1)
        assert reset["event"] == "reset" and "id" not in reset
        slow.close()
        idle = await open_stream(client, token, A)
        r = await client.delete(f"/api/v1/credentials/tokens/{jti}?oid={A}", headers=bearer(admin))
        assert r.status == 200, await r.text()
        [ended] = await events_of(idle, 1)  # within the revocations' refresh and a heartbeat
        assert ended["event"] == "revoked"
        assert (await open_stream(client, token, A)).status == 401
    finally:
        await client.close()
