"""The analyst's workflow through the HTTP API: every write route, its events and its limits."""

import asyncio
import base64
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest

from projections.registry import all_projections
from projections.runner import rebuild
from services.auth.tokens import PERMISSIONS, TokenService
from services.commands.repository import find_ticket_id
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import ingest, lc, seed, serve

ORG = "org-w"
T = "/api/v1/tickets"


async def sync(pool: db.Pool) -> None:
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)


@pytest.fixture
async def api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    await seed(pool, 6, oid=ORG)
    await sync(pool)
    client = await serve(pool, tokens)
    client.session.headers.update(
        bearer(tokens.mint("alice@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    )
    yield client
    await client.close()


async def call(api: Client, method: str, path: str, status: int, **kw: Any) -> Any:
    sep = "&" if "?" in path else "?"
    r = await api.request(method, f"{path}{sep}oid={ORG}" if path.startswith(T + "/") else path, **kw)
    body = await r.json()
    assert r.status == status, body
    return body


async def timeline(pool: db.Pool, number: int) -> list[str]:
    async with pool.acquire() as conn:
        tid = await find_ticket_id(conn, ORG, number)
        assert tid is not None
        return [e.type for e in await store.read_stream(conn, tid)]


async def test_lifecycle_through_patch(api: Client, pool: db.Pool) -> None:
    t = (await call(api, "PATCH", f"{T}/1", 200, json={"status": "acknowledged"}))["ticket"]
    assert t["status"] == "acknowledged" and t["acknowledged_at"]
    err = await call(api, "PATCH", f"{T}/1", 409, json={"status": "resolved"})
    assert (
        err["allowed"] == ["in_progress", "escalated", "closed", "merged"] and "acknowledged" in err["error"]
    )
    await call(api, "PATCH", f"{T}/1", 200, json={"status": "in_progress"})
    resolved = (await call(api, "PATCH", f"{T}/1", 200, json={"status": "resolved"}))["ticket"]
    reopened = (await call(api, "PATCH", f"{T}/1", 200, json={"status": "in_progress"}))["ticket"]
    assert reopened["resolved_at"] == resolved["resolved_at"]
    await call(api, "PATCH", f"{T}/1", 200, json={"status": "resolved"})
    closed = (await call(api, "PATCH", f"{T}/1", 200, json={"status": "closed"}))["ticket"]
    assert closed["closed_at"] and closed["resolved_at"] == resolved["resolved_at"]
    err = await call(api, "PATCH", f"{T}/1", 409, json={"status": "in_progress"})
    assert err["allowed"] == []
    assert await timeline(pool, 1) == [
        "created", "status_changed", "acknowledged", "status_changed", "status_changed", "resolved",
        "status_changed", "reopened", "status_changed", "resolved", "status_changed", "closed",
    ]  # fmt: skip
    await sync(pool)
    got = await call(api, "GET", f"{T}/1", 200)
    assert got["ticket"]["status"] == "closed" and got["ticket"]["resolved_at"] == resolved["resolved_at"]
    assert [e["type"] for e in got["events"]][-2:] == ["status_changed", "closed"]
    assert all(e["by"] == "alice@example.com" for e in got["events"][1:])


async def test_patch_fields_limits_and_atomicity(api: Client, pool: db.Pool) -> None:
    body = {
        "assignee": "bob@example.com", "classification": "true_positive", "escalation_group": "tier3",
        "investigation_id": "inv-42", "summary": "s" * 8192, "conclusion": "done", "tags": ["Phish", "phish", "urgent"],
        "status": "escalated",
    }  # fmt: skip
    t = (await call(api, "PATCH", f"{T}/2", 200, json=body))["ticket"]
    assert (
        t["tags"] == ["Phish", "urgent"] and t["escalation_group"] == "tier3" and t["status"] == "escalated"
    )
    assert (await timeline(pool, 2))[1:] == [
        "status_changed", "assigned", "classified", "escalated", "investigation_linked", "summary_updated",
        "conclusion_updated", "tags_updated",
    ]  # fmt: skip
    for bad, field in (
        ({"summary": "s" * 8193}, "summary"),
        ({"conclusion": "c" * 8193}, "conclusion"),
        ({"tags": [f"t{i}" for i in range(51)]}, "tags"),
        ({"tags": ["x" * 129]}, "tags"),
        ({"tags": ["tab\there"]}, "tags"),
        ({"classification": "maybe"}, "classification"),
        ({"status": "bogus"}, "status"),
        ({"severity": "low"}, "severity"),
        ({"by": "mallory"}, "by"),
    ):
        err = await call(api, "PATCH", f"{T}/3", 422, json=bad)
        assert err["field"].startswith(field), err
    # one invalid part refuses the whole PATCH
    await call(api, "PATCH", f"{T}/3", 409, json={"assignee": "carol@example.com", "status": "resolved"})
    assert await timeline(pool, 3) == ["created"]
    await call(api, "PATCH", f"{T}/3", 200, json={"status": "closed"})
    t = (await call(api, "PATCH", f"{T}/3", 200, json={"classification": "false_positive"}))["ticket"]
    assert t["classification"] == "false_positive"  # classification at any status
    await sync(pool)
    listed = await call(api, "GET", f"/api/v1/tickets?oids={ORG}&tag=PHISH,urgent", 200)
    assert [t["ticket_number"] for t in listed["tickets"]] == [2]
    assert (await call(api, "GET", f"/api/v1/assignees?oids={ORG}", 200))["assignees"] == ["bob@example.com"]
    assert [
        t["ticket_number"]
        for t in (await call(api, "GET", f"{T}?oids={ORG}&escalation_group=tier3", 200))["tickets"]
    ] == [2]


async def test_notes_of_every_type(api: Client, pool: db.Pool) -> None:
    for note_type in ("general", "analysis", "remediation", "escalation", "handoff"):
        note = await call(
            api, "POST", f"{T}/4/notes", 201, json={"content": f"{note_type} note", "note_type": note_type}
        )
        assert note["note_type"] == note_type and note["by"] == "alice@example.com"
    assert (await timeline(pool, 4)).count("note_added") == 5


async def test_detections_link_list_unlink(api: Client, pool: db.Pool) -> None:
    flat = {
        "detection_id": "manual-1",
        "detection_cat": "lateral",
        "detection_priority": 9,
        "sensor_id": "s",
        "hostname": "H",
    }
    linked = await call(api, "POST", f"{T}/1/detections", 201, json=flat)
    assert linked["detection_count"] == 2 and linked["linked"] is True
    again = await call(api, "POST", f"{T}/1/detections", 200, json=flat)
    assert again["linked"] is False and again["detection_count"] == 2
    full = {
        "detect_id": "lc-full-1",
        "cat": "cred",
        "priority": 3,
        "routing": {"oid": ORG, "sid": "x", "hostname": "h"},
    }
    await call(api, "POST", f"{T}/1/detections", 201, json={"detection": full})
    foreign = {**full, "detect_id": "lc-full-2", "routing": {"oid": "other-org"}}
    err = await call(api, "POST", f"{T}/1/detections", 422, json={"detection": foreign})
    assert err["field"] == "detection"
    err = await call(api, "POST", f"{T}/2/detections", 409, json=flat)  # owned by ticket 1
    assert "already linked" in err["error"]
    await call(api, "POST", f"{T}/1/detections", 422, json={"detection_cat": "no id"})
    await sync(pool)
    listed = await call(api, "GET", f"{T}/1/detections", 200)
    assert [d["detection_id"] for d in listed["detections"]][1:] == ["manual-1", "lc-full-1"]
    gone = await call(api, "DELETE", f"{T}/1/detections/manual-1", 200)
    assert gone["detection_count"] == 2
    await call(api, "DELETE", f"{T}/1/detections/manual-1", 404)
    await call(api, "POST", f"{T}/2/detections", 201, json=flat)  # free again: may be linked elsewhere
    await sync(pool)
    assert (await call(api, "GET", f"{T}/1", 200))["ticket"]["detection_count"] == 2
    assert "detection_removed" in await timeline(pool, 1)


async def test_entities_and_cross_ticket_search(api: Client, pool: db.Pool, tokens: TokenService) -> None:
    ip = {
        "entity_type": "ip",
        "entity_value": "203.0.113.50",
        "name": "C2",
        "verdict": "malicious",
        "context": "beacon",
    }
    e1 = await call(api, "POST", f"{T}/1/entities", 201, json=ip)
    await call(api, "POST", f"{T}/1/entities", 409, json={**ip, "entity_value": " 203.0.113.50"})
    await call(api, "POST", f"{T}/2/entities", 201, json=ip)
    dom = await call(
        api, "POST", f"{T}/1/entities", 201, json={"entity_type": "domain", "entity_value": "EVIL.example."}
    )
    assert dom["entity_value"] == "evil.example"
    err = await call(
        api, "POST", f"{T}/1/entities", 422, json={"entity_type": "ip", "entity_value": "300.1.1.1"}
    )
    assert err["field"] == "entity_value"
    await call(api, "POST", f"{T}/1/entities", 422, json={"entity_type": "weird", "entity_value": "x"})
    updated = await call(api, "PATCH", f"{T}/1/entities/{e1['entity_id']}", 200, json={"verdict": "benign"})
    assert updated["verdict"] == "benign" and updated["name"] == "C2"
    await call(api, "PATCH", f"{T}/1/entities/{e1['entity_id']}", 422, json={"entity_value": "1.1.1.1"})
    for when in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # outside what can be stored
        err = await call(
            api,
            "POST",
            f"{T}/1/entities",
            422,
            json={**ip, "entity_value": "198.51.100.7", "first_seen": when},
        )
        assert err["field"] == "first_seen", when
    await call(
        api, "PATCH", f"{T}/1/entities/00000000-0000-0000-0000-000000000000", 404, json={"verdict": "benign"}
    )
    await call(api, "PATCH", f"{T}/1/entities/not-a-uuid", 422, json={"verdict": "benign"})
    await sync(pool)
    listed = await call(api, "GET", f"{T}/1/entities", 200)
    assert {e["entity_value"] for e in listed["entities"]} == {"203.0.113.50", "evil.example"}
    found = await call(
        api, "GET", f"/api/v1/entities/search?oids={ORG}&entity_type=ip&entity_value=203.0.113.50", 200
    )
    assert sorted(m["ticket_number"] for m in found["tickets"]) == [1, 2]
    assert all({"status", "severity", "ticket_id", "entity"} <= set(m) for m in found["tickets"])
    untyped = await call(api, "GET", f"/api/v1/entities/search?oids={ORG}&entity_value=Evil.Example", 200)
    assert [m["ticket_number"] for m in untyped["tickets"]] == [1]
    other = bearer(tokens.mint("x@y", {"org-other": ["investigation.get"]}, ttl_s=60))
    r = await api.get(f"/api/v1/entities/search?oids={ORG}&entity_value=203.0.113.50", headers=other)
    assert r.status == 403
    await call(api, "DELETE", f"{T}/1/entities/{e1['entity_id']}", 200)
    await call(api, "DELETE", f"{T}/1/entities/{e1['entity_id']}", 404)
    assert [t for t in await timeline(pool, 1) if t.startswith("entity_")] == [
        "entity_added", "entity_added", "entity_updated", "entity_removed",
    ]  # fmt: skip


async def test_long_values_in_a_wide_script_are_stored_and_found(api: Client, pool: db.Pool) -> None:
    """2,048 CJK characters are 6 KiB, more than a btree entry holds: before migration 0012 the
    projector was refused the entity's row, after the event was stored, and stopped there."""
    long = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(2048))
    twin = long[:300] + "x" * (2048 - 300)  # the same first 256 characters, another value
    medium = long[:600]  # short enough to search for: a URL holds 8 KiB, 600 of these are 5.3 KiB encoded
    for value in (long, twin, medium, medium[:500] + "y"):
        await call(api, "POST", f"{T}/3/entities", 201, json={"entity_type": "other", "entity_value": value})
    await sync(pool)
    listed = await call(api, "GET", f"{T}/3/entities", 200)
    assert {e["entity_value"] for e in listed["entities"]} == {long, twin, medium, medium[:500] + "y"}
    found = await call(api, "GET", f"/api/v1/entities/search?oids={ORG}&entity_value={quote(medium)}", 200)
    assert [m["entity"]["entity_value"] for m in found["tickets"]] == [medium]


async def test_telemetry_both_forms_and_artifacts(api: Client, pool: db.Pool) -> None:
    flat = {
        "atom": "abc123",
        "sid": "sensor-1",
        "event_type": "NEW_PROCESS",
        "event_summary": "ps",
        "verdict": "malicious",
    }
    t1 = await call(api, "POST", f"{T}/1/telemetry", 201, json=flat)
    event = {
        "routing": {"this": "def456", "sid": "sensor-1", "event_type": "DNS_REQUEST"},
        "event": {"DOMAIN": "x"},
    }
    t2 = await call(api, "POST", f"{T}/1/telemetry", 201, json={"event": event, "relevance": "c2 lookup"})
    assert (t2["atom"], t2["sid"], t2["event_type"]) == ("def456", "sensor-1", "DNS_REQUEST")
    await call(api, "POST", f"{T}/1/telemetry", 409, json=flat)
    err = await call(api, "POST", f"{T}/1/telemetry", 422, json={"event": {"routing": {"sid": "s"}}})
    assert err["field"] == "event.routing.this"
    await call(api, "POST", f"{T}/1/telemetry", 422, json={"atom": "only-atom"})
    up = await call(api, "PATCH", f"{T}/1/telemetry/{t1['telemetry_id']}", 200, json={"relevance": "initial"})
    assert up["relevance"] == "initial" and up["event_summary"] == "ps"
    await call(api, "DELETE", f"{T}/1/telemetry/{t2['telemetry_id']}", 200)
    art = await call(api, "POST", f"{T}/1/artifacts", 201, json={"artifact_type": "pcap", "description": "capture",
                                                                   "verdict": "suspicious", "hash": "ab12"})  # fmt: skip
    await call(api, "POST", f"{T}/1/artifacts", 422, json={"description": "no type"})
    await sync(pool)
    tel = await call(api, "GET", f"{T}/1/telemetry", 200)
    assert [t["atom"] for t in tel["telemetry"]] == ["abc123"] and tel["telemetry"][0][
        "relevance"
    ] == "initial"
    arts = await call(api, "GET", f"{T}/1/artifacts", 200)
    assert [a["artifact_id"] for a in arts["artifacts"]] == [art["artifact_id"]]
    await call(api, "DELETE", f"{T}/1/artifacts/{art['artifact_id']}", 200)
    await sync(pool)
    assert (await call(api, "GET", f"{T}/1/artifacts", 200))["artifacts"] == []
    types = await timeline(pool, 1)
    for name in (
        "telemetry_added",
        "telemetry_updated",
        "telemetry_removed",
        "artifact_added",
        "artifact_removed",
    ):
        assert name in types


async def test_merge(api: Client, pool: db.Pool) -> None:
    await call(api, "POST", f"{T}/2/entities", 201, json={"entity_type": "hash", "entity_value": "ABC"})
    merged = await call(
        api,
        "POST",
        f"{T}/merge",
        200,
        json={"oid": ORG, "target_ticket_number": 1, "source_ticket_numbers": [2, 3]},
    )
    assert merged["merged"] == [2, 3] and merged["ticket"]["detection_count"] == 3
    await sync(pool)
    for n in (2, 3):
        src = (await call(api, "GET", f"{T}/{n}", 200))["ticket"]
        assert src["status"] == "merged" and src["merged_into_ticket_id"] == merged["ticket"]["ticket_id"]
        assert (await timeline(pool, n))[-1] == "merged_into"
    assert (await timeline(pool, 1))[-2:] == ["merged_from", "merged_from"]
    target_detections = (await call(api, "GET", f"{T}/1/detections", 200))["detections"]
    assert len(target_detections) == 3
    # the source's evidence is still there, referenced through the source ticket
    assert len((await call(api, "GET", f"{T}/2/entities", 200))["entities"]) == 1
    base = {"oid": ORG, "target_ticket_number": 1}
    await call(api, "POST", f"{T}/merge", 422, json={**base, "source_ticket_numbers": [1]})
    await call(api, "POST", f"{T}/merge", 409, json={**base, "source_ticket_numbers": [2]})  # already merged
    await call(
        api, "POST", f"{T}/merge", 409, json={**base, "target_ticket_number": 2, "source_ticket_numbers": [4]}
    )
    await call(api, "POST", f"{T}/merge", 404, json={**base, "source_ticket_numbers": [99]})
    await call(api, "POST", f"{T}/merge", 422, json={**base, "source_ticket_numbers": list(range(2, 23))})
    await call(api, "POST", f"{T}/merge", 422, json={**base, "source_ticket_numbers": []})
    await call(api, "PATCH", f"{T}/5", 200, json={"status": "closed"})
    await call(
        api, "POST", f"{T}/merge", 409, json={**base, "target_ticket_number": 5, "source_ticket_numbers": [4]}
    )
    # a detection moved by the merge now belongs to the target
    moved = target_detections[1]["detection_id"]
    err = await call(api, "POST", f"{T}/4/detections", 409, json={"detection_id": moved})
    assert "already linked" in err["error"]


async def test_bulk_update_reports_each_ticket(api: Client) -> None:
    await call(api, "PATCH", f"{T}/2", 200, json={"status": "closed"})
    result = await call(
        api,
        "POST",
        f"{T}/bulk-update",
        200,
        json={
            "oid": ORG,
            "ticket_numbers": [1, 2, 3, 99],
            "update": {"status": "acknowledged", "assignee": "dave@example.com"},
        },
    )
    statuses = {r["ticket_number"]: r["status"] for r in result["results"]}
    assert statuses == {1: 200, 2: 409, 3: 200, 99: 404}
    assert (result["succeeded"], result["failed"]) == (2, 2)
    ok = next(r for r in result["results"] if r["ticket_number"] == 1)
    assert ok["ticket"]["assignee"] == "dave@example.com" and ok["ticket"]["status"] == "acknowledged"
    assert "allowed" in next(r for r in result["results"] if r["ticket_number"] == 2)["error"]
    await call(
        api,
        "POST",
        f"{T}/bulk-update",
        422,
        json={"oid": ORG, "ticket_numbers": list(range(1, 202)), "update": {}},
    )
    await call(
        api, "POST", f"{T}/bulk-update", 422, json={"oid": ORG, "ticket_numbers": [1], "update": {"nope": 1}}
    )
    r = await call(
        api,
        "POST",
        f"{T}/bulk-update",
        200,
        json={
            "oid": ORG,
            "ticket_numbers": list(range(1, 201)),
            "update": {"classification": "false_positive"},
        },
    )
    assert (r["succeeded"], r["failed"]) == (6, 194)


async def test_extension_requests(api: Client, pool: db.Pool, tokens: TokenService) -> None:
    url = "/v1/extension/request/ext-ticketing"
    data = {
        "detection_cat": "lateral",
        "detection_source": "manual",
        "detection_priority": 5,
        "sensor_id": "sid-9",
        "hostname": "DESKTOP-9",
    }
    r = await call(
        api, "POST", url, 200, data={"oid": ORG, "action": "create_ticket", "data": json.dumps(data)}
    )
    assert r["data"]["created"] is True and r["data"]["ticket_number"] == 7 and r["data"]["ticket_id"]
    detection = {
        "detect_id": "dr-77",
        "cat": "ransom",
        "priority": 9,
        "routing": {"oid": ORG, "sid": "sid-9", "hostname": "h"},
    }
    packed = base64.b64encode(
        gzip.compress(json.dumps({"detection": json.dumps(detection)}).encode())
    ).decode()
    r = await call(api, "POST", url, 200, data={"oid": ORG, "action": "create_ticket", "gzdata": packed})
    assert r["data"]["ticket_number"] == 8
    again = await call(api, "POST", url, 200, data={"oid": ORG, "action": "create_ticket", "gzdata": packed})
    assert again["data"] == {**r["data"], "created": False}  # the same detection answers with its ticket
    bare = await call(
        api,
        "POST",
        url,
        200,
        data={"oid": ORG, "action": "create_ticket", "data": json.dumps({"severity": "critical"})},
    )
    await sync(pool)
    t = (await call(api, "GET", f"{T}/{bare['data']['ticket_number']}", 200))["ticket"]
    assert t["severity"] == "critical" and t["detection_count"] == 0
    t8 = (await call(api, "GET", f"{T}/8", 200))["ticket"]
    assert (t8["detection_id"], t8["severity"]) == ("dr-77", "critical")
    count = await call(
        api,
        "POST",
        url,
        200,
        data={
            "oid": ORG,
            "action": "get_ticket_count",
            "data": json.dumps({"sensor_id": "sid-9", "status": "new,acknowledged"}),
        },
    )
    assert count == {"data": {"count": 2}}
    await call(api, "POST", url, 422, data={"oid": ORG, "action": "explode", "data": "{}"})
    await call(api, "POST", url, 422, data={"oid": ORG, "action": "create_ticket", "gzdata": "not-base64!"})
    for gzdata in ("\u00acY", "H4sI"):  # not ASCII (found by make fuzz: was a 500); base64 of a cut gzip
        err = await call(
            api, "POST", url, 422, data={"oid": ORG, "action": "get_ticket_count", "gzdata": gzdata}
        )
        assert err["field"] == "gzdata"
    await call(
        api,
        "POST",
        url,
        422,
        data={"oid": ORG, "action": "get_ticket_count", "data": json.dumps({"status": "nope"})},
    )
    reader = bearer(tokens.mint("r@x", {ORG: ["investigation.get"]}, ttl_s=60))
    r2 = await api.post(url, data={"oid": ORG, "action": "create_ticket", "data": "{}"}, headers=reader)
    assert r2.status == 403


async def test_fifty_concurrent_patches_lose_nothing(api: Client, pool: db.Pool) -> None:
    async def patch(i: int) -> int:
        r = await api.patch(f"{T}/6?oid={ORG}", json={"assignee": f"analyst{i}@example.com"})
        return r.status

    statuses = await asyncio.gather(*(patch(i) for i in range(50)))
    assert statuses == [200] * 50
    async with pool.acquire() as conn:
        tid = await find_ticket_id(conn, ORG, 6)
        assert tid is not None
        events = await store.read_stream(conn, tid)
    assert [e.version for e in events] == list(range(1, 52))  # contiguous, one event per PATCH
    assignees = [json.loads(e.data)["assignee"] for e in events[1:]]
    assert sorted(assignees) == sorted(f"analyst{i}@example.com" for i in range(50))
    chain = [json.loads(e.data)["old_assignee"] for e in events[1:]]
    assert chain == [None, *assignees[:-1]]  # each decided on the latest state: no lost update


async def test_openapi_document_and_docs_page(api: Client) -> None:
    doc = await call(api, "GET", "/openapi.json", 200)
    assert doc["openapi"] == "3.1.0"
    from services.api.app import ROUTES

    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["responses"]
        if route.permission:
            assert op["security"] == [{"bearerAuth": []}]
    patch = doc["paths"]["/api/v1/tickets/{number}"]["patch"]
    assert patch["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/TicketChanges"
    }
    assert set(doc["components"]["schemas"]["TicketChanges"]["properties"]) == {
        "status", "assignee", "classification", "escalation_group", "investigation_id", "summary", "conclusion", "tags",
        "external_ticket_id", "external_ticket_url",
    }  # fmt: skip
    r = await api.get("/docs")
    page = await r.text()
    assert r.status == 200 and "/api/v1/tickets/merge" in page and "TicketChanges" in page


async def test_rebuild_reproduces_every_read_table(api: Client, pool: db.Pool) -> None:
    await call(api, "PATCH", f"{T}/1", 200, json={"status": "acknowledged", "tags": ["a"], "summary": "s"})
    await call(api, "POST", f"{T}/1/entities", 201, json={"entity_type": "ip", "entity_value": "10.0.0.1"})
    await call(api, "POST", f"{T}/1/telemetry", 201, json={"atom": "a", "sid": "s"})
    await call(api, "POST", f"{T}/1/artifacts", 201, json={"artifact_type": "pcap"})
    task = await call(api, "POST", f"{T}/1/tasks", 201, json={"title": "Isolate the host"})
    await call(api, "PATCH", f"{T}/1/tasks/{task['task_id']}", 200, json={"done": True})
    await call(api, "POST", f"{T}/1/detections", 201, json={"detection_id": "extra"})
    await call(
        api,
        "POST",
        f"{T}/merge",
        200,
        json={"oid": ORG, "target_ticket_number": 1, "source_ticket_numbers": [2]},
    )
    await call(api, "DELETE", f"{T}/1/detections/extra", 200)
    detections = (await call(api, "GET", f"{T}/1/detections", 200))["detections"]
    await call(api, "POST", f"{T}/1/split", 201, json={"detection_ids": [detections[-1]["detection_id"]]})
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    held = {"match": {"category": "held"}, "reason": "noise", "expires_at": expires}
    await call(api, "POST", f"/api/v1/suppressions?oid={ORG}", 201, json=held)
    await ingest(pool, [lc(ORG, 0, cat="held")], first_offset=10_000)
    await sync(pool)
    tables = all_projections()[0].tables

    async def snapshot() -> dict[str, list[Any]]:
        async with pool.acquire() as conn:
            return {t: sorted(map(tuple, await conn.fetch(f"SELECT * FROM {t}")), key=str) for t in tables}

    before = await snapshot()
    assert all(before[t] for t in tables)
    for p in all_projections():
        await rebuild(pool, p)
    assert await snapshot() == before


async def test_if_match_applies_a_change_only_to_the_version_it_was_decided_on(
    api: Client, pool: db.Pool, tokens: TokenService
) -> None:
    r = await api.get(f"{T}/2?oid={ORG}")
    seen = r.headers["ETag"]
    assert seen == '"1"' and (await r.json())["ticket"]["mtta_due_at"]  # the created event; SLA deadlines
    bob = bearer(tokens.mint("bob@example.com", {ORG: list(PERMISSIONS)}, ttl_s=600))
    await call(api, "PATCH", f"{T}/2", 200, json={"assignee": "bob"}, headers=bob)
    r = await api.patch(f"{T}/2?oid={ORG}", json={"assignee": "alice"}, headers={"If-Match": seen})
    body = await r.json()
    assert r.status == 412 and "bob@example.com" in body["error"] and r.headers["ETag"] == '"2"', body
    assert await timeline(pool, 2) == ["created", "assigned"]  # nothing applied over bob's change
    r = await api.patch(f"{T}/2?oid={ORG}", json={"assignee": "alice"}, headers={"If-Match": 'W/"2"'})
    assert r.status == 200 and r.headers["ETag"] == '"3"'
    for bad in ('"two"', '"1234567890123"'):
        r = await api.patch(f"{T}/2?oid={ORG}", json={"assignee": "x"}, headers={"If-Match": bad})
        assert r.status == 400 and (await r.json())["field"] == "If-Match"
    r = await api.patch(f"{T}/2?oid={ORG}", json={"assignee": "carol"}, headers={"If-Match": "*"})
    assert r.status == 200  # no precondition
    assert await timeline(pool, 2) == ["created", "assigned", "assigned", "assigned"]


async def test_a_ticket_with_its_evidence_in_one_call_from_its_events(api: Client) -> None:
    """`?expand=evidence` answers the whole ticket page at once, at once consistent with a change
    just made (the read tables may still be catching up)."""
    await call(api, "POST", f"{T}/3/entities", 201, json={"entity_type": "ip", "entity_value": "203.0.113.9"})
    await call(
        api,
        "POST",
        f"{T}/3/artifacts",
        201,
        json={"artifact_type": "pcap", "url": "https://x.example/a.pcap"},
    )
    whole = await call(api, "GET", f"{T}/3?expand=evidence", 200)
    assert [e["entity_value"] for e in whole["entities"]] == ["203.0.113.9"]
    assert [a["artifact_type"] for a in whole["artifacts"]] == ["pcap"] and whole["telemetry"] == []
    assert len(whole["detections"]) == whole["ticket"]["detection_count"] == 1
    plain = await call(api, "GET", f"{T}/3", 200)
    assert set(plain) == {"ticket", "events"}  # the wire contract's shape unless asked
    assert (await call(api, "GET", f"{T}/3?expand=everything", 422))["field"] == "expand"


async def test_a_detection_attached_over_the_api_takes_its_org_from_the_route(api: Client) -> None:
    """As an analyst writes one by hand, or a D&R rule passes a trimmed detection: no routing.oid."""
    trimmed = {"detect_id": "hand-1", "cat": "lateral", "routing": {"sid": "s-9", "hostname": "ws-9"}}
    r = await call(api, "POST", f"{T}/1/detections", 201, json={"detection": trimmed})
    assert r["detection"]["oid"] == ORG and r["detection"]["hostname"] == "ws-9"
    flat = await call(
        api, "POST", f"{T}/1/detections", 201, json={"detection_id": "hand-2", "detection_cat": "x"}
    )
    assert flat["detection"]["oid"] == ORG
    other = {**trimmed, "detect_id": "hand-3", "routing": {"oid": "someone-else", "sid": "s"}}
    refused = await call(api, "POST", f"{T}/1/detections", 422, json={"detection": other})
    assert "someone-else" in refused["error"] and ORG in refused["error"] and refused["field"] == "detection"
    url = "/v1/extension/request/ext-ticketing"
    data = json.dumps({"detection": {**trimmed, "detect_id": "hand-4"}})
    made = await call(api, "POST", url, 200, data={"oid": ORG, "action": "create_ticket", "data": data})
    assert made["data"]["created"] is True


async def test_a_report_over_any_range_is_the_report_of_what_exists(api: Client) -> None:
    path = f"/api/v1/reports/summary?oids={ORG}"
    wide = await call(api, "GET", f"{path}&from=1970-01-01T00:00:00Z&to=9999-12-31T23:59:59Z", 200)
    assert wide["aggregate"]["total"] == 6 and wide["period_from"].startswith("1970-01-01")
    assert wide["period_to"] < "2100"  # what exists ends now
    early = await call(api, "GET", f"{path}&from=0001-01-01T00:00:00%2B14:00", 200)  # year 0 in UTC
    assert early["aggregate"]["total"] == 6
    assert (await call(api, "GET", f"{path}&from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", 422))[
        "field"
    ] == "from"
    assert (await call(api, "GET", f"{path}&from=yesterday", 422))["field"] == "from"
