"""Every door a detection comes through follows the same rules (issue 30): after an org's purge
none of them takes anything in; an ExtraHop trigger's re-fire updates its ticket; a ticket is
readable by its number as soon as the call that created it has answered."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from services.auth import api_keys, credentials
from services.auth.credentials import REFRESH_S
from services.auth.tokens import TokenService
from services.commands import org_purge
from services.eventstore import db
from services.eventstore import postgres as store
from tests.conftest import bearer
from tests.integration.support import configure, extrahop, ingest, lc, new_key, seed, serve

ORG, OTHER = "intake-org", "intake-other"
OPERATOR = "ops@example.com"


def create_ticket_form(oid: str, detection_id: str) -> dict[str, str]:
    data = {"detection_id": detection_id, "detection_cat": "lateral", "detection_priority": 6}
    return {"oid": oid, "action": "create_ticket", "data": json.dumps(data)}


def issue(detection_id: int, risk: int, labels: list[str]) -> dict[str, Any]:
    """The seed trigger's payload (extrahop-ticket-tracking.txt) for one detection."""
    return {
        "fields": {
            "summary": f"ExtraHop Detection: {detection_id}: Suspicious CIFS Client File Share Access",
            "assignee": {"name": "escalations_team"},
            "reporter": {"name": "ExtraHop"},
            "priority": {"id": risk},
            "labels": labels,
            "mitreCategories": [{"id": "TA0008", "name": "Lateral Movement"}],
            "description": "ExtraHop has detected the following event on your\nnetwork: AccountingLaptop read 1.13K files",
        }
    }


async def tickets_of(pool: db.Pool, oid: str) -> int:
    async with pool.acquire() as conn:
        n: int = await conn.fetchval("SELECT count(*) FROM ticket_index WHERE oid = $1", oid)
        return n


async def streams_of(pool: db.Pool, oid: str) -> set[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT DISTINCT type FROM events WHERE metadata->>'oid' = $1", oid)
    return {r[0] for r in rows}


@pytest.fixture
async def purged(pool: db.Pool, tokens: TokenService, tmp_path: Path) -> dict[str, str]:
    """The org with tickets, tokens and a key, then purged; returns the credentials minted before."""
    await seed(pool, 3, oid=ORG)
    await seed(pool, 2, oid=OTHER)
    own = tokens.mint(f"ana@{ORG}", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=600)
    both = tokens.mint(
        "lead@x",
        {ORG: ["investigation.set", "investigation.get"], OTHER: ["investigation.set", "investigation.get"]},
        ttl_s=600,
    )
    async with pool.acquire() as conn:
        await credentials.record(conn, own, "test")
        await credentials.record(conn, both, "test")
    key = await new_key(pool, ORG)
    await org_purge.purge_org(pool, ORG, OPERATOR, tmp_path / "archive")
    assert await tickets_of(pool, ORG) == 0
    return {"own": own, "both": both, "key": key}


async def refused_within_refresh(call: Any) -> int:
    """The status a request gets once every process has read the revocations (REFRESH_S)."""
    started = time.monotonic()
    while True:
        status: int = await call()
        if status != 200 or time.monotonic() - started > REFRESH_S + 2:
            return status
        await asyncio.sleep(0.25)


async def test_kafka_drops_and_counts_a_purged_orgs_detections(pool: db.Pool, purged: dict[str, str]) -> None:
    await ingest(pool, [lc(ORG, 1), lc(OTHER, 2)])
    assert await tickets_of(pool, ORG) == 0 and await tickets_of(pool, OTHER) == 3
    assert await streams_of(pool, ORG) == {"org_purged"}


async def test_create_ticket_with_the_orgs_token_is_refused(
    pool: db.Pool, tokens: TokenService, purged: dict[str, str]
) -> None:
    client = await serve(pool, tokens)
    try:

        async def call() -> int:
            r = await client.post("/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, "d-own"),
                                  headers=bearer(purged["own"]))  # fmt: skip
            return r.status

        assert await refused_within_refresh(call) == 401  # the purge revoked it
        listed = await client.get(f"/api/v1/credentials?oid={OTHER}", headers=bearer(
            tokens.mint("admin@x", {OTHER: ["org.conf.set"]}, ttl_s=60)))  # fmt: skip
        assert listed.status == 200
    finally:
        await client.close()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT revoked_at, revoked_by FROM issued_tokens WHERE subject = $1", f"ana@{ORG}"
        )
    assert row is not None and row["revoked_at"] is not None and row["revoked_by"] == "system:org-purge"
    assert await tickets_of(pool, ORG) == 0


async def test_create_ticket_with_an_operator_token_is_410(
    pool: db.Pool, tokens: TokenService, purged: dict[str, str]
) -> None:
    client = await serve(pool, tokens)
    operator = bearer(
        tokens.mint(OPERATOR, {"*": ["investigation.set", "investigation.get"]}, ttl_s=60, operator=True)
    )
    try:
        r = await client.post(
            "/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, "d-op"), headers=operator
        )
        body = await r.json()
        assert r.status == 410 and "unsubscribed" in body["error"], body
        r = await client.get(f"/api/v1/tickets?oids={ORG}", headers=operator)
        assert r.status == 200 and (await r.json())["tickets"] == []
    finally:
        await client.close()
    assert await tickets_of(pool, ORG) == 0


async def test_a_token_of_several_orgs_loses_the_purged_one(
    pool: db.Pool, tokens: TokenService, purged: dict[str, str]
) -> None:
    client = await serve(pool, tokens)
    try:

        async def call() -> int:
            r = await client.post("/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, "d-both"),
                                  headers=bearer(purged["both"]))  # fmt: skip
            return r.status

        assert (
            await refused_within_refresh(call) == 404
        )  # the org is no longer the token's: not found, as any org it never had
        r = await client.post("/v1/extension/request/ext-ticketing", data=create_ticket_form(OTHER, "d-other"),
                              headers=bearer(purged["both"]))  # fmt: skip
        assert r.status == 200, await r.text()  # the other org's still are
    finally:
        await client.close()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT orgs, lost_orgs, revoked_at FROM issued_tokens WHERE subject = 'lead@x'"
        )
    assert row is not None and (row["orgs"], row["lost_orgs"], row["revoked_at"]) == ([OTHER], [ORG], None)
    assert await tickets_of(pool, ORG) == 0


async def test_create_issue_is_refused_with_the_orgs_keys(
    pool: db.Pool, tokens: TokenService, purged: dict[str, str]
) -> None:
    async with pool.acquire() as conn:
        late = await api_keys.create(conn, ORG, "made-after-the-purge", [api_keys.TRACK], "test")
    client = await serve(pool, tokens)
    try:
        r = await client.post(
            "/rest/api/issue", json=issue(4437, 83, ["sec.lateral"]), headers=extrahop(purged["key"])
        )
        assert r.status == 401  # revoked by the purge
        r = await client.post(
            "/rest/api/issue", json=issue(4438, 83, ["sec.lateral"]), headers=extrahop(late)
        )
        assert r.status == 410 and "unsubscribed" in (await r.json())["error"]
    finally:
        await client.close()
    async with pool.acquire() as conn:
        revoked_by = await conn.fetchval(
            "SELECT revoked_by FROM api_keys WHERE oid = $1 AND name = 'extrahop-prod'", ORG
        )
    assert revoked_by == "system:org-purge"
    assert await tickets_of(pool, ORG) == 0


async def test_linking_into_a_ticket_of_a_purge_halfway_is_refused(
    pool: db.Pool, tokens: TokenService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge that stopped after its tombstone (crashed halfway): the org's remaining tickets take
    nothing in either."""
    await seed(pool, 2, oid=ORG)

    async def crash(conn: db.Connection, oid: str, streams: list[Any]) -> int:
        raise ConnectionError("the operator's session died")

    monkeypatch.setattr(org_purge, "_purge_streams", crash)
    with pytest.raises(ConnectionError):
        await org_purge.purge_org(pool, ORG, OPERATOR, tmp_path)
    client = await serve(pool, tokens)
    operator = bearer(tokens.mint(OPERATOR, {"*": ["investigation.set"]}, ttl_s=60, operator=True))
    try:
        r = await client.post(
            f"/api/v1/tickets/1/detections?oid={ORG}", json={"detection_id": "late-1"}, headers=operator
        )
        assert r.status == 410, await r.text()
    finally:
        await client.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM detection_index WHERE detection_id = 'late-1'") == 0


async def test_a_resubscribed_org_takes_in_only_what_came_after_and_can_be_purged_again(
    pool: db.Pool, tokens: TokenService, purged: dict[str, str], tmp_path: Path
) -> None:
    client = await serve(pool, tokens)
    operator = bearer(
        tokens.mint(
            OPERATOR,
            {"*": ["org.conf.set", "investigation.set", "investigation.get"]},
            ttl_s=60,
            operator=True,
        )
    )
    try:
        r = await client.post(f"/api/v1/orgs/{OTHER}/subscription", headers=operator)
        assert r.status == 409  # never purged
        r = await client.post(f"/api/v1/orgs/{ORG}/subscription", headers=operator)
        assert r.status == 201 and (await r.json())["resubscribed_by"] == OPERATOR
        await ingest(pool, [lc(ORG, 1, cat="from-before-the-purge")])  # detected in March 2026
        assert await tickets_of(pool, ORG) == 0
        r = await client.post(
            "/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, "new"), headers=operator
        )
        assert r.status == 200 and (await r.json())["data"]["ticket_number"] == 1, await r.text()
        # Purged again: a new purge, and the doors close again.
        again = await org_purge.purge_org(pool, ORG, OPERATOR, tmp_path / "archive")
        assert (
            again.completed_at is not None
            and again.resubscribed_at is None
            and again.counts["ticket_index"] == 1
        )
        r = await client.post(
            "/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, "newer"), headers=operator
        )
        assert r.status == 410
    finally:
        await client.close()
    assert await tickets_of(pool, ORG) == 0
    async with pool.acquire() as conn:
        stream = await store.read_stream(conn, org_purge.tombstone_stream(ORG))
    assert [e.type for e in stream] == ["org_purged", "org_resubscribed", "org_purged"]


async def test_an_extrahop_re_fire_updates_its_ticket(pool: db.Pool, tokens: TokenService) -> None:
    key = await new_key(pool, ORG)
    client = await serve(pool, tokens)
    reader = bearer(tokens.mint("ana@x", {ORG: ["investigation.get"]}, ttl_s=60))
    try:
        r = await client.post("/rest/api/issue", json=issue(4437, 30, ["sec.lateral"]), headers=extrahop(key))
        assert r.status == 201
        number = (await r.json())["key"].rsplit("-", 1)[1]
        r = await client.post(
            "/rest/api/issue", json=issue(4437, 95, ["sec.lateral", "sec.exfil"]), headers=extrahop(key)
        )
        assert r.status == 200 and (await r.json())["key"].endswith(f"-{number}")
        first = await client.get(f"/api/v1/tickets/{number}?oid={ORG}&expand=evidence", headers=reader)
        ticket = await first.json()
        assert ticket["ticket"]["severity"] == "critical"
        assert "sec.exfil" in ticket["ticket"]["tags"] and "TA0008" in ticket["ticket"]["tags"]
        types = [e["type"] for e in ticket["events"]]
        assert "severity_upgraded" in types and "detection_updated" in types
        [updated] = [e for e in ticket["events"] if e["type"] == "detection_updated"]
        assert set(updated["metadata"]["changed"]) >= {"detection_priority", "tags"}
        # The same fire again: the trigger runs on every update on the appliance; nothing changed.
        r = await client.post(
            "/rest/api/issue", json=issue(4437, 95, ["sec.lateral", "sec.exfil"]), headers=extrahop(key)
        )
        assert r.status == 200
        again = await client.get(f"/api/v1/tickets/{number}?oid={ORG}", headers=reader)
        assert again.headers["ETag"] == first.headers["ETag"]
    finally:
        await client.close()
    assert await tickets_of(pool, ORG) == 1


async def test_an_extrahop_detection_over_kafka_keeps_what_the_issue_door_keeps(pool: db.Pool) -> None:
    from services.bootstrap import make_handler
    from services.ingest.pipeline import RawRecord, ingest_batch
    from tests.integration.support import Sink

    detection = {"id": 77, "title": "Odd share access", "description": "read 1K files", "type": "cifs",
                 "categories": ["sec.lateral"], "mitreTactics": ["TA0008"], "mitreTechniques": ["T1021"],
                 "riskScore": 40, "participants": [{"role": "offender", "hostname": "pc1"}]}  # fmt: skip
    record = RawRecord("eh", 0, 0, ORG.encode(), json.dumps(detection).encode())
    await ingest_batch(pool, make_handler(), [record], Sink(), default_oid=None)
    async with pool.acquire() as conn:
        [created] = await store.read_stream(conn, (await conn.fetchval("SELECT ticket_id FROM ticket_index")))
    d = json.loads(created.data)["detection"]
    assert (d["title"], d["description"], d["tags"]) == (
        "Odd share access",
        "read 1K files",
        ["sec.lateral", "TA0008", "T1021"],
    )


async def test_a_ticket_is_readable_as_soon_as_create_ticket_answered(
    pool: db.Pool, tokens: TokenService
) -> None:
    await configure(pool, ORG, auto_grouping_enabled=False)
    client = await serve(pool, tokens)
    who = bearer(tokens.mint("ana@x", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=600))
    try:
        for i in range(200):
            r = await client.post(
                "/v1/extension/request/ext-ticketing", data=create_ticket_form(ORG, f"now-{i}"), headers=who
            )
            number = (await r.json())["data"]["ticket_number"]
            got = await client.get(f"/api/v1/tickets/{number}?oid={ORG}", headers=who)
            assert got.status == 200, (i, await got.text())
            assert (await got.json())["ticket"]["ticket_number"] == number
    finally:
        await client.close()


async def test_the_same_detection_through_doors_at_once_opens_one_ticket(
    pool: db.Pool, tokens: TokenService
) -> None:
    """A rule firing twice at the same moment, and the trigger too: every call answers the one
    ticket (a racing writer's claim makes the loser read again), none a 409."""
    key = await new_key(pool, ORG)
    client = await serve(pool, tokens)
    who = bearer(tokens.mint("ana@x", {ORG: ["investigation.get", "investigation.set"]}, ttl_s=600))
    try:
        for round_ in range(5):
            detection_id = 5000 + round_
            form = create_ticket_form(ORG, str(detection_id))
            calls = [
                client.post("/v1/extension/request/ext-ticketing", data=form, headers=who) for _ in range(4)
            ]
            calls += [
                client.post("/rest/api/issue", json=issue(detection_id, 50, ["x"]), headers=extrahop(key))
                for _ in range(4)
            ]
            replies = await asyncio.gather(*calls)
            assert all(r.status in (200, 201) for r in replies), [(r.status, await r.text()) for r in replies]
    finally:
        await client.close()
    assert await tickets_of(pool, ORG) == 5


async def test_a_detection_unlinked_and_sent_again_opens_another_ticket(pool: db.Pool) -> None:
    """Its own ticket exists without it (an analyst unlinked it): the id it would open is taken, so
    it opens the next of its ids, over Kafka as through the API (this stopped the worker before)."""
    from domain.commands import UnlinkDetection
    from services.bootstrap import make_handler
    from services.commands.envelope import CommandContext
    from services.commands.handlers import execute_one

    d = lc(ORG, 1)
    await ingest(pool, [d])
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT ticket_id FROM ticket_index WHERE oid = $1", ORG)
    await execute_one(pool, make_handler(), UnlinkDetection(first, d["detect_id"]), CommandContext("ana"))
    for _ in range(2):  # sent again (then the same message again: a redelivery, nothing)
        await ingest(pool, [d])
    async with pool.acquire() as conn:
        owner = await conn.fetchval(
            "SELECT ticket_id FROM detection_index WHERE detection_id = $1", d["detect_id"]
        )
    assert await tickets_of(pool, ORG) == 2 and owner not in (None, first)
