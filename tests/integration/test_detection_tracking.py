"""Inbound updates from a work-tracker: the ExtraHop seed's script, run as written with only HOST and
API_KEY changed, updates the tickets that hold its detections; the mapping of statuses and
resolutions; an impossible move is a 409 that changes nothing; links render the org's template."""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from projections.registry import all_projections
from projections.runner import rebuild
from projections.tickets import TicketsProjection
from services.auth.tokens import TokenService
from services.bootstrap import create_pool, make_handler
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.ingest.pipeline import RawRecord, ingest_batch
from services.settings import Settings
from tests.conftest import Client, bearer
from tests.integration.support import Sink, configure, extrahop, new_key, serve

ORG = "eh-org"

# The seed's script (extrahop-ticket-tracking.txt), verbatim but for HOST and API_KEY.
SEED_SCRIPT = """#!/usr/bin/python3

import json
import requests
import csv

API_KEY = '@API_KEY@'
HOST = '@HOST@'

# Method that updates detections on an ExtraHop system

def updateDetection(detection):
    url = HOST + 'api/v1/detections/' + detection['detection_id']
    del detection['detection_id']
    data = json.dumps(detection)
    headers = {'Content-Type': 'application/json',
              'Accept': 'application/json',
              'Authorization': 'ExtraHop apikey=%s' % API_KEY}
    r = requests.patch(url, data=data, headers=headers)
    print(r.status_code)
    print(r.text)

# Array of detection information
detections = [
    {
        "detection_id": "1",
        "ticket_id": "TK-16982",
        "status": "new",
        "assignee": "sally",
        "resolution": None,
    },
    {
        "detection_id": "2",
        "ticket_id": "TK-2078",
        "status": None,
        "assignee": "jim",
        "resolution": None,
    },
    {
        "detection_id": "3",
        "ticket_id": "TK-3452",
        "status": None,
        "assignee": "alex",
        "resolution": None,
    }
]

for detection in detections:
    updateDetection(detection)
"""


async def extrahop_detections(pool: db.Pool, *ids: int) -> None:
    """ExtraHop detections through the Kafka path, keyed by the org."""
    records = [
        RawRecord("detections", 0, i, f"{ORG}/x/y".encode(),
                  json.dumps({"id": d, "type": "cifs_suspicious_share_access", "riskScore": 60}).encode())
        for i, d in enumerate(ids)
    ]  # fmt: skip
    await ingest_batch(pool, make_handler(), records, Sink(), default_oid=None)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)


async def rows(pool: db.Pool) -> dict[str, asyncpg.Record]:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        found = await conn.fetch("SELECT * FROM tickets WHERE oid = $1", ORG)
    return {r["detection_id"]: r for r in found}


async def patch(client: Client, key: str, detection_id: str, body: dict[str, Any]) -> tuple[int, Any]:
    r = await client.patch(f"/api/v1/detections/{detection_id}", data=json.dumps(body),
                           headers={**extrahop(key), "Content-Type": "application/json"})  # fmt: skip
    return r.status, await r.json()


@pytest.fixture
async def client(pool: db.Pool, tokens: TokenService) -> Any:
    c = await serve(pool, tokens)
    yield c
    await c.close()


async def test_the_seed_script_as_written_updates_three_tickets(
    pool: db.Pool, client: Client, tmp_path: Path
) -> None:
    await configure(pool, ORG, external_ticket_url_template="https://jira.example.com/browse/$ticket_id")
    await extrahop_detections(pool, 1, 2, 3)
    key = await new_key(pool, ORG, "tracker-sync")
    script = tmp_path / "update_detections.py"
    script.write_text(SEED_SCRIPT.replace("@API_KEY@", key).replace("@HOST@", str(client.make_url("/"))))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0::2] == ["200", "200", "200"], out.decode()
    after = await rows(pool)
    assert {d: (r["external_ticket_id"], r["assignee"], r["status"]) for d, r in after.items()} == {
        "1": ("TK-16982", "sally", "new"),
        "2": ("TK-2078", "jim", "new"),
        "3": ("TK-3452", "alex", "new"),
    }
    assert after["1"]["external_ticket_url"] == "https://jira.example.com/browse/TK-16982"
    async with pool.acquire() as conn:
        linked = await conn.fetch(
            "SELECT metadata->>'actor', data->>'external_ticket_id' FROM events WHERE type = 'external_ticket_linked'"
            " ORDER BY position"
        )
    assert [tuple(r) for r in linked] == [
        ("apikey:tracker-sync", t) for t in ("TK-16982", "TK-2078", "TK-3452")
    ]


async def test_statuses_and_resolutions_map_onto_the_lifecycle_all_or_nothing(
    pool: db.Pool, client: Client, tokens: TokenService, settings: Settings
) -> None:
    await extrahop_detections(pool, 11, 12)
    key = await new_key(pool, ORG)
    status, reply = await patch(client, key, "11", {"status": "In Progress", "assignee": "bob"})
    assert status == 200 and (reply["status"], reply["assignee"]) == ("in_progress", "bob"), reply
    status, reply = await patch(client, key, "11", {"status": "Closed with Action Taken"})
    assert status == 200 and (reply["status"], reply["classification"]) == ("closed", "true_positive")
    # closed is terminal: the move back is a 409 naming both states, and the assignee stays bob.
    status, reply = await patch(client, key, "11", {"status": "in_progress", "assignee": "carol"})
    assert status == 409 and "closed" in reply["error"] and "in_progress" in reply["error"]
    assert (await rows(pool))["11"]["assignee"] == "bob"
    status, reply = await patch(client, key, "12", {"status": "closed", "resolution": "no_action_taken"})
    assert status == 200 and reply["classification"] == "false_positive"
    assert (await patch(client, key, "12", {"status": "reopened"}))[0] == 422
    assert (await patch(client, key, "12", {"resolution": "maybe"}))[0] == 422
    assert (await patch(client, key, "404404", {"assignee": "x"}))[0] == 404
    user = tokens.mint("a@x", {ORG: ["ticket.track", "investigation.set"]}, ttl_s=60)
    r = await client.patch("/api/v1/detections/12", json={"assignee": "x"}, headers=bearer(user))
    assert r.status == 403  # an integration route: API keys only
    # The links are in the list (filterable), and a rebuild from the log gives the same rows.
    await patch(client, key, "12", {"ticket_id": "TK-1"})
    await rows(pool)  # the projection has caught up
    reader = tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=60)
    listed = await (
        await client.get(f"/api/v1/tickets?oids={ORG}&external_ticket_id=TK-1", headers=bearer(reader))
    ).json()
    assert [t["detection_id"] for t in listed["tickets"]] == ["12"] and listed["tickets"][0][
        "external_ticket_url"
    ] is None
    before = await rows(pool)
    owner = await create_pool(settings.as_owner(), max_size=2)
    try:
        await rebuild(owner, TicketsProjection())
    finally:
        await owner.close()
    assert await rows(pool) == before


@pytest.mark.parametrize(
    ("detection_id", "body"),
    [
        ("11%00", {"assignee": "x"}),
        ("d" * 300, {"assignee": "x"}),
        ("11", {"assignee": "a\u0000b"}),
        ("11", {"ticket_id": "漢" * 6144}),
        ("11", {"status": 7}),
        ("11", {"assignee": ["x"]}),
        ("11", []),
    ],
)
async def test_hostile_updates_are_4xx_and_change_nothing(
    pool: db.Pool, client: Client, detection_id: str, body: Any
) -> None:
    await extrahop_detections(pool, 11)
    before = await rows(pool)
    r = await client.patch(f"/api/v1/detections/{detection_id}", data=json.dumps(body),
                           headers={**extrahop(await new_key(pool, ORG)), "Content-Type": "application/json"})  # fmt: skip
    assert 400 <= r.status < 500, await r.text()
    assert await rows(pool) == before
