"""Routing (issue 32): round robin gives 300 tickets over 3 analysts 100 each, least-loaded keeps
open counts within 1, an away analyst gets none, and an escalation to a group goes to one of its
analysts, each assignment recorded by system:routing in the transaction that opened or escalated."""

from collections import Counter
from datetime import UTC, datetime, timedelta

from services.auth.tokens import TokenService
from services.eventstore import db
from tests.conftest import bearer
from tests.integration.support import configure, ingest, lc, serve

ORG = "routing-org"
TEAM = ["a@x", "b@x", "c@x"]


async def assignments(pool: db.Pool) -> list[tuple[str, str]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT metadata->>'actor', data->>'assignee' FROM events WHERE type = 'assigned'"
            " AND metadata->>'oid' = $1 ORDER BY position",
            ORG,
        )
    return [(r[0], r[1]) for r in rows]


async def loads(pool: db.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT analyst, open_tickets FROM analyst_loads WHERE oid = $1", ORG)
    return {r[0]: r[1] for r in rows}


async def test_round_robin_gives_each_analyst_a_third(pool: db.Pool) -> None:
    await configure(pool, ORG, routing={"rules": [{"match": {}, "mode": "round_robin", "analysts": TEAM}]})
    await ingest(pool, [lc(ORG, i / 10, cat=f"c{i}") for i in range(300)], batch=37)
    got = await assignments(pool)
    assert len(got) == 300 and {actor for actor, _ in got} == {"system:routing"}
    assert Counter(a for _, a in got) == {"a@x": 100, "b@x": 100, "c@x": 100}
    assert await loads(pool) == {"a@x": 100, "b@x": 100, "c@x": 100}


async def test_least_loaded_keeps_open_counts_within_one_and_the_away_get_none(
    pool: db.Pool, tokens: TokenService
) -> None:
    routing = {"rules": [
        {"match": {"severity": ["critical", "high"]}, "mode": "least_loaded", "analysts": TEAM},
        {"match": {"escalation_group": "tier2"}, "mode": "round_robin", "analysts": ["t2@x"]},
    ]}  # fmt: skip
    await configure(pool, ORG, routing=routing)
    client = await serve(pool, tokens)
    admin = bearer(
        tokens.mint("lead@x", {ORG: ["investigation.get", "investigation.set", "org.conf.set"]}, ttl_s=600)
    )
    try:
        await ingest(pool, [lc(ORG, i, cat=f"k{i}", priority=9) for i in range(7)])
        for n in (1, 2, 3):  # three taken off the rotation's hands by a person: b holds more
            r = await client.patch(f"/api/v1/tickets/{n}?oid={ORG}", json={"assignee": "b@x"}, headers=admin)
            assert r.status == 200
        await ingest(pool, [lc(ORG, 10 + i, cat=f"m{i}", priority=8) for i in range(29)], first_offset=100)
        held = await loads(pool)
        assert sum(held.values()) == 36 and max(held.values()) - min(held.values()) <= 1, held
        # Low severity matches no rule: nobody is assigned.
        before = len(await assignments(pool))
        await ingest(pool, [lc(ORG, 50, cat="quiet", priority=1)], first_offset=200)
        assert len(await assignments(pool)) == before
        # c is away for a day (by an admin), a takes itself out: b gets everything.
        until = (datetime.now(UTC) + timedelta(days=1)).isoformat()
        r = await client.put(f"/api/v1/analysts/c@x?oid={ORG}", json={"away_until": until}, headers=admin)
        assert r.status == 200 and (await r.json())["in_rotation"] is False
        own = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
        r = await client.put(f"/api/v1/analysts/a@x?oid={ORG}", json={"away_until": until}, headers=own)
        assert r.status == 200
        r = await client.put(f"/api/v1/analysts/b@x?oid={ORG}", json={"away_until": until}, headers=own)
        assert r.status == 403  # another analyst's rotation is not a's to change
        start = len(await assignments(pool))
        await ingest(pool, [lc(ORG, 60 + i, cat=f"n{i}", priority=9) for i in range(6)], first_offset=300)
        assert [a for _, a in (await assignments(pool))[start:]] == ["b@x"] * 6
        # Back in rotation: c is the least loaded now.
        r = await client.put(f"/api/v1/analysts/c@x?oid={ORG}", json={"away_until": None}, headers=admin)
        assert (await r.json())["in_rotation"] is True
        await ingest(pool, [lc(ORG, 70, cat="back", priority=9)], first_offset=400)
        assert (await assignments(pool))[-1] == ("system:routing", "c@x")
        # An escalation to tier2 goes to its analyst, in the escalation's transaction.
        r = await client.patch(
            f"/api/v1/tickets/4?oid={ORG}", json={"escalation_group": "tier2"}, headers=admin
        )
        body = await r.json()
        assert r.status == 200 and body["ticket"]["assignee"] == "t2@x", body
        assert (await assignments(pool))[-1] == ("system:routing", "t2@x")
        # Naming an assignee with the escalation keeps the person's choice.
        r = await client.patch(f"/api/v1/tickets/5?oid={ORG}", json={"escalation_group": "tier2", "assignee": "a@x"},
                               headers=admin)  # fmt: skip
        assert (await r.json())["ticket"]["assignee"] == "a@x"
        # Closing a ticket frees its analyst's slot.
        held = await loads(pool)
        r = await client.patch(f"/api/v1/tickets/5?oid={ORG}", json={"status": "closed"}, headers=admin)
        assert r.status == 200 and (await loads(pool))["a@x"] == held["a@x"] - 1
    finally:
        await client.close()


async def test_invalid_routing_is_a_422_naming_the_field(pool: db.Pool, tokens: TokenService) -> None:
    client = await serve(pool, tokens)
    admin = bearer(tokens.mint("lead@x", {ORG: ["org.conf.set"]}, ttl_s=600))
    try:
        for patch, field in (
            ({"routing": {"rules": [{"analysts": []}]}}, "routing.rules[0].analysts"),
            ({"routing": {"rules": [{"analysts": ["not-an-email"]}]}}, "routing.rules[0].analysts[0]"),
            ({"routing": {"rules": [{"analysts": ["a@x"], "mode": "random"}]}}, "routing.rules[0].mode"),
        ):
            r = await client.put(f"/api/v1/config/{ORG}", json=patch, headers=admin)
            body = await r.json()
            assert r.status == 422 and body["field"] == field, body
    finally:
        await client.close()
