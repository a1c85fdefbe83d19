"""Orgs placed on two databases (issue 36, step 4): each org's events, read tables and dedup state
are on its shard's database; org-scoped routes go there; the multi-org list pages through both in
order, and the dashboard, reports, searches and the live stream merge both; purge and migrate run
per database. (Two databases of one server here; tests/e2e/test_two_servers.py runs two servers.)"""

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.auth import api_keys, sessions
from services.auth.tokens import TokenService
from services.bootstrap import create_placement, make_handler, prepare
from services.devstack.embedded import RUNTIME_ROLE, Infra, as_role
from services.eventstore.placement import Placement, PlacementRefused
from services.ingest.pipeline import RawRecord, ingest_batch
from services.settings import Settings
from tests.conftest import Client, _create_database, _with_db, bearer
from tests.integration.support import T0, Sink, configure, lc, projecting, serve, sso_settings
from tests.integration.test_log_shards import orgs_in_shards
from tests.integration.test_sessions import new_session
from tests.integration.test_stream import events_of, open_stream

SHARDS = 2


HOME_ORGS, OTHER_ORGS = orgs_in_shards(SHARDS, 2)
ORGS = HOME_ORGS + OTHER_ORGS


@pytest.fixture
def placed_env(infra: Infra, service_env: dict[str, str], database_url: str) -> dict[str, str]:
    """The test's database is home (shard 0); shard 1 is on a second database."""
    other = _with_db(infra.database_url, f"t_{uuid.uuid4().hex[:16]}")
    asyncio.run(_create_database(infra.database_url, other.rpartition("/")[2]))
    env = {
        **service_env,
        "TICKETING_LOG_SHARDS": str(SHARDS),
        "TICKETING_PLACEMENT": f"1={as_role(other, RUNTIME_ROLE)}",
        "TICKETING_MIGRATION_PLACEMENT": f"1={other}",
    }
    asyncio.run(prepare(Settings.from_env(env)))
    return env


@pytest.fixture
async def placement(placed_env: dict[str, str]) -> AsyncIterator[Placement]:
    p = await create_placement(Settings.from_env(placed_env).as_owner(), max_size=10)
    yield p
    await p.close()


def records(detections: list[dict[str, Any]], first_offset: int = 0) -> list[RawRecord]:
    return [
        RawRecord("d", 0, first_offset + i, None, json.dumps(d).encode()) for i, d in enumerate(detections)
    ]


async def oids_stored(pool: Any) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT metadata->>'oid' AS oid, count(*) FROM events GROUP BY 1")
    return {r[0]: r[1] for r in rows}


def token(tokens: TokenService, *perms: str) -> str:
    return tokens.mint("analyst@example.com", {o: list(perms) for o in ORGS}, ttl_s=600)


async def test_each_org_lives_on_its_database_and_the_api_merges_both(
    placement: Placement, tokens: TokenService
) -> None:
    home, other = placement.pools
    assert [placement.pool_of(o) is home for o in ORGS] == [True, True, False, False]
    rng = random.Random(36)
    detections = [
        lc(oid, rng.uniform(0, 600), cat=rng.choice(["malware", "recon"]), priority=rng.randint(1, 4))
        for oid in ORGS
        for _ in range(30)
    ]
    rng.shuffle(detections)  # one batch holds both databases' orgs, interleaved
    handler = make_handler()
    result = await ingest_batch(placement, handler, records(detections), Sink(), default_oid=None)
    assert result.tickets_created == 120
    again = await ingest_batch(placement, handler, records(detections), Sink(), default_oid=None)
    assert again.tickets_created == 0 and again.duplicates == 120  # re-delivered: each database dedups

    on_home, on_other = await oids_stored(home), await oids_stored(other)
    assert set(on_home) == set(HOME_ORGS) and set(on_other) == set(OTHER_ORGS)
    assert sum(on_home.values()) + sum(on_other.values()) == 120  # the same offsets again wrote nothing

    async with AsyncExitStack() as stack:
        for pool in placement.pools:
            await stack.enter_async_context(projecting(pool))
        client = await serve(placement.home, tokens, placement=placement)
        stack.push_async_callback(client.close)
        read = bearer(token(tokens, "investigation.get", "investigation.set"))
        await _wait_projected(client, read)

        # org-scoped routes: each org's ticket 1 on its own database, acknowledged there
        for oid in (HOME_ORGS[0], OTHER_ORGS[0]):
            resp = await client.patch(
                f"/api/v1/tickets/1?oid={oid}", json={"status": "acknowledged"}, headers=read
            )
            assert resp.status == 200, await resp.text()
            resp = await client.get(f"/api/v1/tickets/1?oid={oid}", headers=read)
            assert (await resp.json())["ticket"]["status"] == "acknowledged"
        await _wait_projected(client, read, acknowledged=2)

        await _pages_in_order(client, read, home, other)
        await _dashboard_and_reports_sum_both(client, read, home, other)
        await _search_and_stream_see_both(client, read, tokens)


async def _wait_projected(client: Client, headers: dict[str, str], acknowledged: int = 0) -> None:
    async with asyncio.timeout(30):
        while True:
            resp = await client.get(f"/api/v1/tickets?oids={','.join(ORGS)}&page_size=1", headers=headers)
            counts = (await resp.json())["total_counts"]
            if sum(counts.values()) == 120 and counts.get("acknowledged", 0) == acknowledged:
                return
            await asyncio.sleep(0.1)


async def _pages_in_order(client: Client, headers: dict[str, str], home: Any, other: Any) -> None:
    expected: dict[str, list[str]] = {}
    rows = []
    for pool in (home, other):
        async with pool.acquire() as conn:
            rows += await conn.fetch(
                "SELECT ticket_id, created_at, ticket_number, severity_rank FROM tickets"
            )
    expected["created_at"] = [
        str(r["ticket_id"])
        for r in sorted(
            rows, key=lambda r: (r["created_at"], r["ticket_number"], r["ticket_id"]), reverse=True
        )
    ]
    expected["severity"] = [
        str(r["ticket_id"])
        for r in sorted(
            rows, key=lambda r: (r["severity_rank"], r["created_at"], r["ticket_number"], r["ticket_id"])
        )
    ]
    for sort, order in (("created_at", "desc"), ("severity", "asc")):
        seen: list[str] = []
        url = f"/api/v1/tickets?oids={','.join(ORGS)}&page_size=7&sort={sort}&order={order}"
        page_token = None
        while True:
            resp = await client.get(
                url + (f"&page_token={page_token}" if page_token else ""), headers=headers
            )
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert sum(body["total_counts"].values()) == 120  # both databases' counts
            seen += [t["ticket_id"] for t in body["tickets"]]
            assert all(t["mtta_due_at"] for t in body["tickets"])  # each with its org's deadlines
            page_token = body["next_page_token"]
            if not page_token:
                break
        assert seen == expected[sort], sort  # every ticket of both databases once, in order
    resp = await client.get("/api/v1/tickets?oids=x&page_token=garbage", headers=headers)
    assert resp.status in (403, 422)


async def _percentiles(conn: Any, values: list[float]) -> tuple[float | None, float | None]:
    """PostgreSQL's own percentile_cont over the values of both databases: the oracle."""
    row = await conn.fetchrow(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x), percentile_cont(0.9) WITHIN GROUP (ORDER BY x)"
        " FROM unnest($1::float8[]) AS x",
        values,
    )
    return row[0], row[1]


async def _dashboard_and_reports_sum_both(
    client: Client, headers: dict[str, str], home: Any, other: Any
) -> None:
    oids = ",".join(ORGS)
    board = await (await client.get(f"/api/v1/dashboard/counts?oids={oids}", headers=headers)).json()
    assert set(board["orgs"]) == set(ORGS)
    assert board["total"]["total"] == 120 == sum(c["total"] for c in board["orgs"].values())
    assert board["total"]["by_status"] == {"new": 118, "acknowledged": 2}
    for severity, n in board["total"]["by_severity"].items():
        assert n == sum(c["by_severity"].get(severity, 0) for c in board["orgs"].values())
    only_other = await (
        await client.get(f"/api/v1/dashboard/counts?oids={OTHER_ORGS[0]}", headers=headers)
    ).json()
    assert only_other["orgs"][OTHER_ORGS[0]] == board["orgs"][OTHER_ORGS[0]]

    now = datetime.now(UTC)  # (a ticket is created when its detection arrives)
    since = (min(now, T0) - timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    until = (now + timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    period = f"from={since}&to={until}"
    report = await (await client.get(f"/api/v1/reports/summary?oids={oids}&{period}", headers=headers)).json()
    assert report["aggregate"]["total"] == 120 == sum(m["total"] for m in report["orgs"].values())
    durations: list[float] = []
    for pool in (home, other):
        async with pool.acquire() as conn:
            durations += [
                r[0]
                for r in await conn.fetch(
                    "SELECT extract(epoch FROM acknowledged_at - created_at)::float8 FROM tickets"
                    " WHERE acknowledged_at IS NOT NULL"
                )
            ]
    assert len(durations) == 2  # one on each database: the aggregate's needs both
    async with home.acquire() as conn:
        median, p90 = await _percentiles(conn, durations)
    mtta = report["aggregate"]["mtta"]
    assert (
        mtta["count"] == 2
        and mtta["median_s"] == pytest.approx(median)
        and mtta["p90_s"] == pytest.approx(p90)
    )
    assert mtta["mean_s"] == pytest.approx(sum(durations) / 2)
    grouped = await (
        await client.get(f"/api/v1/reports/summary?oids={oids}&{period}&group_by=severity", headers=headers)
    ).json()
    assert sum(g["total"] for g in grouped["aggregate"]["groups"].values()) == 120

    trend = await (await client.get(f"/api/v1/reports/trend?oids={oids}&{period}", headers=headers)).json()
    assert sum(b["opened"] for b in trend["buckets"]) == 120
    assert sum(b["mtta"]["count"] for b in trend["buckets"]) == 2

    rules = await (await client.get(f"/api/v1/reports/rules?oids={oids}&{period}", headers=headers)).json()
    assert {r["oid"] for r in rules["rules"]} == set(ORGS)
    assert sum(r["tickets"] for r in rules["rules"]) == 120
    assert [(r["oid"], r["category"]) for r in rules["rules"]] == sorted(
        (r["oid"], r["category"]) for r in rules["rules"]
    )

    assignees = await client.get(f"/api/v1/assignees?oids={oids}", headers=headers)
    assert assignees.status == 200


async def _search_and_stream_see_both(client: Client, headers: dict[str, str], tokens: TokenService) -> None:
    oids = ",".join(ORGS)
    for oid in (HOME_ORGS[1], OTHER_ORGS[1]):  # an indicator on a ticket of each database
        resp = await client.post(
            f"/api/v1/tickets/2/entities?oid={oid}",
            json={"entity_type": "domain", "entity_value": "evil.example"},
            headers=headers,
        )
        assert resp.status == 201, await resp.text()
    async with asyncio.timeout(20):
        while True:
            resp = await client.get(
                f"/api/v1/entities/search?oids={oids}&entity_value=evil.example", headers=headers
            )
            found = (await resp.json())["tickets"]
            if len(found) == 2:
                break
            await asyncio.sleep(0.1)
    assert {t["oid"] for t in found} == {HOME_ORGS[1], OTHER_ORGS[1]}

    # the live stream from the start: both databases' events, each id naming both shards' positions
    stream = await open_stream(client, token(tokens, "investigation.get"), oids, last=0)
    assert stream.status == 200
    got = await events_of(stream, 126)  # 120 created, twice acknowledged + status_changed, 2 entity_added
    stream.close()
    assert sum(e["data"]["oid"] in HOME_ORGS for e in got) == 63
    assert [e["data"]["action"] for e in got].count("entity_added") == 2
    ids = [tuple(int(p) for p in e["id"].split(".")) for e in got]
    assert all(len(i) == SHARDS for i in ids) and ids == sorted(ids)  # never going back in a shard


async def test_purge_runs_on_the_orgs_database_and_revokes_on_the_home_one(
    placement: Placement, tokens: TokenService
) -> None:
    home, other = placement.pools
    oid = OTHER_ORGS[0]
    await ingest_batch(
        placement, make_handler(), records([lc(oid, 1), lc(HOME_ORGS[0], 1)]), Sink(), default_oid=None
    )
    async with home.acquire() as conn:
        await api_keys.create(conn, oid, "tracker", [api_keys.TRACK], "test")
    operator = tokens.mint("ops@example.com", {oid: ["org.conf.set"]}, ttl_s=600, operator=True)
    client = await serve(placement.home, tokens, placement=placement)
    try:
        resp = await client.delete(f"/api/v1/orgs/{oid}", headers=bearer(operator))
        assert resp.status == 200, await resp.text()
        counts = (await resp.json())["counts"]
        assert counts["api_keys_revoked"] == 1 and counts["events"] >= 1
    finally:
        await client.close()
    assert oid not in await oids_stored(other) or (await oids_stored(other))[oid] == 1  # its org_purged
    async with other.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_index WHERE oid = $1", oid) == 0
        assert await conn.fetchval("SELECT completed_at IS NOT NULL FROM org_tombstones WHERE oid = $1", oid)
    async with home.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ticket_index WHERE oid = $1", HOME_ORGS[0]) == 1


async def test_migrate_refuses_to_leave_events_where_the_placement_does_not_look(
    placed_env: dict[str, str], placement: Placement
) -> None:
    home = placement.home
    await ingest_batch(placement, make_handler(), records([lc(HOME_ORGS[0], 1)]), Sink(), default_oid=None)
    await prepare(Settings.from_env(placed_env))  # events where placed: nothing to refuse
    with pytest.raises(PlacementRefused, match="cannot change"):  # N would move orgs between databases
        await prepare(Settings.from_env({**placed_env, "TICKETING_LOG_SHARDS": "4"}))
    stray = OTHER_ORGS[0]  # shard 1's org, written to the home database as if it were not placed
    await ingest_batch(
        Placement.single(home), make_handler(), records([lc(stray, 1)], 1), Sink(), default_oid=None
    )
    with pytest.raises(PlacementRefused, match=r"shards \[1\]"):
        await prepare(Settings.from_env(placed_env))


async def test_a_service_refuses_a_database_whose_shard_count_is_not_the_settings(
    placed_env: dict[str, str], placement: Placement
) -> None:
    async with placement.pools[1].acquire() as conn:
        await conn.execute("UPDATE log_layout SET shards = 3")
    with pytest.raises(Exception, match="3 log shards"):
        await create_placement(Settings.from_env(placed_env))


async def test_a_console_session_gets_its_roles_from_every_database(
    placement: Placement, tokens: TokenService
) -> None:
    """Sessions live on the home database; an org's role mappings on its own: a session's rights,
    its org admin's list of sessions and revocation join the two."""
    home, other = placement.pools
    here, there = HOME_ORGS[0], OTHER_ORGS[0]
    await configure(home, here, role_mappings={"analysts": ["investigation.get"]})
    await configure(
        other, there, role_mappings={"analysts": ["investigation.get"], "admins": ["org.conf.set"]}
    )
    cookie = await new_session(home, "analysts")
    admin = tokens.mint("admin@example.com", {there: ["org.conf.set"]}, ttl_s=600)
    client = await serve(placement.home, tokens, oidc=sso_settings(), placement=placement)
    try:
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        me = await (await client.get("/api/v1/whoami")).json()
        assert me["orgs"] == {here: ["investigation.get"], there: ["investigation.get"]}
        r = await client.get(f"/api/v1/tickets?oids={here},{there}")
        assert r.status == 200, await r.text()
        client.session.cookie_jar.clear()
        listed = await (await client.get(f"/api/v1/credentials?oid={there}", headers=bearer(admin))).json()
        [session] = listed["sessions"]
        r = await client.delete(
            f"/api/v1/credentials/sessions/{session['session_id']}?oid={there}", headers=bearer(admin)
        )
        assert r.status == 200, await r.text()
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        assert (await client.get("/api/v1/whoami")).status == 401
    finally:
        await client.close()
