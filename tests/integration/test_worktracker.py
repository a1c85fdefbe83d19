"""We are the ticket server an ExtraHop trigger posts to (Jira's create-issue), authenticated by an
org API key in the forms an ODS target can send; dedup by detection id holds across this door and
the Kafka one."""

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from projections.registry import all_projections
from services.auth import api_keys
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.ingest.pipeline import RawRecord, ingest_batch
from tests.conftest import Client, bearer
from tests.integration.support import Sink, configure, extrahop, new_key, serve

ORG, OTHER = "eh-org", "eh-other"


def seed_trigger_payload(detection_id: int = 4437, risk: int = 83) -> dict[str, Any]:
    """The seed trigger's `payload`, with the Detection's values of detections.md filled in."""
    summary = "ExtraHop Detection: " + str(detection_id) + ": " + "Suspicious CIFS Client File Share Access"
    description = (
        "ExtraHop has detected the following event on your\nnetwork: "
        + "AccountingLaptop read 1.13K files on corpshare.example.com"
    )
    return {
        "fields": {
            "summary": summary,
            "assignee": {"name": "escalations_team"},
            "reporter": {"name": "ExtraHop"},
            "priority": {"id": risk},
            "labels": ["sec.lateral"],
            "mitreCategories": [{"id": "TA0008", "name": "Lateral Movement"}],
            "description": description,
        }
    }


@pytest.fixture
async def client(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    c = await serve(pool, tokens)
    yield c
    await c.close()


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"extrahop:{key}".encode()).decode()}


async def post(
    client: Client, headers: dict[str, str], body: Any, path: str = "/rest/api/issue"
) -> tuple[int, Any]:
    r = await client.post(
        path, data=json.dumps(body), headers={**headers, "Content-Type": "application/json"}
    )
    return r.status, await r.json()


async def tickets_of(pool: db.Pool, oid: str) -> list[asyncpg.Record]:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM tickets WHERE oid = $1 ORDER BY ticket_number", oid))


async def test_the_seed_trigger_creates_one_ticket_and_a_second_send_none(
    pool: db.Pool, client: Client
) -> None:
    key = await new_key(pool, ORG)
    status, first = await post(client, extrahop(key), seed_trigger_payload())
    assert status == 201, first
    assert first["key"] == "SOC-1" and first["self"].endswith(f"/api/v1/tickets/1?oid={ORG}")
    # DETECTION_UPDATE fires the trigger again; an ODS target may send the key as Bearer or Basic.
    for headers, path in ((bearer(key), "/rest/api/2/issue"), (basic(key), "/rest/api/issue")):
        status, again = await post(client, headers, seed_trigger_payload(), path)
        assert (status, again) == (200, first)
    [ticket] = await tickets_of(pool, ORG)
    assert str(ticket["ticket_id"]) == first["id"]
    assert (ticket["severity"], ticket["assignee"], ticket["detection_id"]) == (
        "critical",
        "escalations_team",
        "4437",
    )
    assert ticket["summary"] == "Suspicious CIFS Client File Share Access"
    assert list(ticket["tags"]) == ["sec.lateral", "TA0008"]  # labels and mitreCategories, to filter by
    async with pool.acquire() as conn:
        [note] = await conn.fetch(
            "SELECT data FROM events WHERE type = 'note_added' AND stream_id = $1", ticket["ticket_id"]
        )
    content = json.loads(note["data"])["content"]
    assert content.startswith("Reported by ExtraHop.") and "AccountingLaptop read 1.13K files" in content
    async with pool.acquire() as conn:
        actors = {
            r[0]
            for r in await conn.fetch(
                "SELECT metadata->>'actor' FROM events WHERE stream_id = $1", ticket["ticket_id"]
            )
        }
    assert actors == {"apikey:extrahop-prod"}


async def test_a_detection_that_came_over_kafka_is_not_ticketed_twice(pool: db.Pool, client: Client) -> None:
    detection = {"id": 4437, "type": "cifs_suspicious_share_access", "riskScore": 83, "startTime": 1763796400000,
                 "participants": [{"role": "offender", "hostname": "AccountingLaptop", "ipaddr": "192.168.6.20"}]}  # fmt: skip
    record = RawRecord("detections", 0, 0, f"{ORG}/x/y".encode(), json.dumps(detection).encode())
    await ingest_batch(pool, make_handler(), [record], Sink(), default_oid=None)
    [from_kafka] = await tickets_of(pool, ORG)
    status, reply = await post(client, extrahop(await new_key(pool, ORG)), seed_trigger_payload())
    assert (status, reply["id"], reply["key"]) == (200, str(from_kafka["ticket_id"]), "SOC-1")
    [still_one] = await tickets_of(pool, ORG)
    assert still_one["severity"] == from_kafka["severity"] == "critical"  # riskScore 83 maps alike


async def test_only_a_live_org_key_with_the_right_opens_the_door(
    pool: db.Pool, client: Client, tokens: TokenService
) -> None:
    body = seed_trigger_payload(detection_id=9)
    user = tokens.mint("alice@example.com", {ORG: ["investigation.set", "ticket.track"]}, ttl_s=600)
    status, reply = await post(client, bearer(user), body)
    assert status == 403 and "API key" in reply["error"]  # never a user's token
    key = await new_key(pool, ORG)
    key_id = key.split("_")[1]
    for wrong in (
        key[:-1] + ("A" if key[-1] != "A" else "B"),
        "shk_0123456789abcdef_" + "x" * 43,
        "nonsense",
    ):
        assert (await post(client, extrahop(wrong), body))[0] == 401
    reader = await new_key(pool, ORG, "reader", ["investigation.get"])
    assert (await post(client, extrahop(reader), body))[0] == 403
    async with pool.acquire() as conn:
        assert await api_keys.revoke(conn, key_id)
        stored = await conn.fetch("SELECT * FROM api_keys")
    assert not any(key.split("_", 2)[2] in repr(dict(r)) for r in stored)  # only a digest is kept
    fresh = await serve(pool, tokens)  # another API process: no cache of the key
    try:
        assert (await post(fresh, extrahop(key), body))[0] == 401
    finally:
        await fresh.close()
    other = await new_key(pool, OTHER)
    status, reply = await post(client, extrahop(other), body)
    assert status == 201 and reply["self"].endswith(f"oid={OTHER}")
    assert await tickets_of(pool, ORG) == [] and len(await tickets_of(pool, OTHER)) == 1


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"summary": "a ticket about something"}, "fields.summary"),
        ({"summary": "ExtraHop Detection: 7: x", "priority": {"id": 120}}, "fields.priority.id"),
        ({"summary": "ExtraHop Detection: 7: x", "priority": {"id": "high"}}, "fields.priority.id"),
        ({}, "summary"),
    ],
)
async def test_a_body_the_route_cannot_use_is_a_422_naming_the_field(
    pool: db.Pool, client: Client, fields: dict[str, Any], named: str
) -> None:
    status, reply = await post(client, extrahop(await new_key(pool, ORG)), {"fields": fields})
    assert status == 422 and named in json.dumps(reply), reply


async def test_unknown_fields_and_an_explicit_detection_id_are_taken(pool: db.Pool, client: Client) -> None:
    body = {"fields": {"summary": "Lateral movement on AccountingLaptop", "detection_id": 5150,
                       "customfield_10010": "kept out of the way"}, "update": {}}  # fmt: skip
    status, reply = await post(client, extrahop(await new_key(pool, ORG)), body)
    assert status == 201, reply
    [ticket] = await tickets_of(pool, ORG)
    assert ticket["detection_id"] == "5150" and ticket["severity"] == "low"  # no riskScore: priority 0


@pytest.mark.parametrize(
    "body",
    [
        {"fields": {"summary": "ExtraHop Detection: 1\u0000: x"}},
        {"fields": {"summary": "ExtraHop Detection: 1: x", "description": "a\u0000b"}},
        {"fields": {"summary": "ExtraHop Detection: 1: " + "漢" * 6144}},
        {"fields": {"summary": "ExtraHop Detection: 1: x", "priority": {"id": 2**70}}},
        {"fields": {"summary": "ExtraHop Detection: 1: x", "detection_id": "d" * 300}},
        {"fields": {"summary": "ExtraHop Detection: 1: x", "labels": [[[[[[[[]]]]]]]]}},
        '{"fields": {"summary": "ExtraHop Detection: 1: x", "mitreCategories": '
        + "[" * 5000
        + "]" * 5000
        + "}}",
        [],
        {"fields": None},
    ],
)
async def test_hostile_bodies_are_4xx_and_store_nothing(pool: db.Pool, client: Client, body: Any) -> None:
    key = await new_key(pool, ORG)
    r = await client.post(
        "/rest/api/issue",
        data=json.dumps(body),
        headers={**extrahop(key), "Content-Type": "application/json"},
    )
    assert 400 <= r.status < 500, await r.text()
    assert await tickets_of(pool, ORG) == []


async def test_the_issue_key_uses_the_orgs_prefix(pool: db.Pool, client: Client) -> None:
    await configure(pool, ORG, ticket_key_prefix="EXH")
    status, reply = await post(client, extrahop(await new_key(pool, ORG)), seed_trigger_payload())
    assert (status, reply["key"]) == (201, "EXH-1")
