"""Every route, every parameter and body field, with the values that once got through to a 500 or
stopped a service: no answer may be a 5xx, and the projector must take every event they produced.

schemathesis (test_fuzz.py) explores the schema; it does not send NUL characters, 6 KiB of CJK,
JSON nested past the decoder, times in year 0 once in UTC or integers past 64 bits. These do.
"""

import json
from collections import Counter
from typing import Any

from projections.registry import all_projections
from services.api.app import ROUTES
from services.api.openapi import build
from services.auth.tokens import PERMISSIONS, TokenService
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import bearer
from tests.integration.support import seed, serve
from tests.integration.test_access_matrix import add_evidence

ORG = "hostile-org"
DEEP = "[" * 5000 + "]" * 5000  # raw JSON, spliced in as a value
WIDE = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(2048))  # 6 KiB in UTF-8
STRINGS = [
    "a\u0000b",
    WIDE,
    WIDE[:300],
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "\u202e",
    "",
]
OTHERS: list[Any] = [2**70, -(2**70), 1e308, -1, None, [], {}, True]
BASES: dict[str, dict[str, Any]] = {  # a valid body per schema, one field of which is replaced
    "NoteBody": {"content": "x"},
    "EntityBody": {"entity_type": "ip", "entity_value": "203.0.113.9"},
    "EntityChanges": {"verdict": "benign"},
    "TelemetryBody": {"atom": "a-9", "sid": "s-9"},
    "TelemetryChanges": {"verdict": "benign"},
    "ArtifactBody": {"artifact_type": "pcap", "path": "/x"},
    "TicketChanges": {"summary": "x"},
    "BulkUpdateBody": {"oid": ORG, "ticket_numbers": [2], "changes": {"summary": "x"}},
    "MergeBody": {"oid": ORG, "target_ticket_number": 3, "source_ticket_numbers": [4]},
    "LinkDetectionBody": {"detection_id": "d-9"},
}


def schema_name(op: dict[str, Any]) -> str | None:
    content = op.get("requestBody", {}).get("content", {})
    for media in content.values():
        ref = media.get("schema", {}).get("$ref", "")
        return ref.rsplit("/", 1)[-1] or None
    return None


def variants(base: dict[str, Any], fields: list[str]) -> list[bytes]:
    bodies = []
    for field in fields:
        for value in [*STRINGS, *OTHERS]:
            bodies.append(json.dumps({**base, field: value}).encode())
        bodies.append(json.dumps({**base, field: "@"}).encode().replace(b'"@"', DEEP.encode()))
    return bodies


async def test_no_hostile_value_gets_a_5xx_or_stops_the_projector(
    pool: db.Pool, tokens: TokenService
) -> None:
    await seed(pool, 6, oid=ORG)
    ids = await add_evidence(pool, ORG)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    doc = build(ROUTES)
    client = await serve(pool, tokens)
    token = bearer(tokens.mint("hostile@example.com", {ORG: list(PERMISSIONS)}, ttl_s=3600))
    seen: list[tuple[str, int]] = []
    try:
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                params = {p["name"]: p for p in op.get("parameters", [])}
                url = path.replace("{number}", "1").replace("{oid}", ORG)
                for name, value in ids.items():
                    url = url.replace("{" + name + "}", value)
                query = {n: ORG for n in params if n in ("oid", "oids")}
                requests: list[tuple[str, dict[str, Any]]] = []
                for name, p in params.items():
                    if p["in"] == "query":
                        for value in STRINGS:  # 6 KiB of CJK is 18 KB in a URL: aiohttp's own 400
                            if value is WIDE:
                                continue
                            requests.append((url, {"params": {**query, name: value}}))
                body_schema = schema_name(op)
                if body_schema == "ExtensionForm":
                    for raw in variants(
                        {"detection_id": "d-x", "detection_cat": "c"},
                        ["detection_id", "hostname", "detection", "severity"],
                    ):
                        form = {"oid": ORG, "action": "create_ticket", "data": raw.decode()}
                        requests.append((url, {"params": query, "data": form}))
                elif body_schema is not None:
                    fields = list(doc["components"]["schemas"][body_schema].get("properties", {}))
                    for raw in variants(BASES.get(body_schema, {}), fields):
                        headers = {"Content-Type": "application/json"}
                        requests.append((url, {"params": query, "data": raw, "headers": headers}))
                for target, kwargs in requests:
                    headers = {**token, **kwargs.pop("headers", {})}
                    r = await client.request(method.upper(), target, headers=headers, **kwargs)
                    text = await r.text()
                    assert r.status < 500, (method, target, kwargs, text[:300])
                    if r.status >= 400 and r.status != 405:
                        assert "error" in json.loads(text), (method, target, text[:300])
                    seen.append((f"{method} {path}", r.status))
    finally:
        await client.close()
    statuses = Counter(s for _, s in seen)
    assert len(seen) > 1000 and {200, 201, 404, 409, 422} <= set(statuses), statuses  # they reached the rules
    for p in all_projections():  # every event the accepted requests appended is projectable
        await catch_up(pool, p.name, p.apply)
