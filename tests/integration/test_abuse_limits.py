"""Abuse limits: what one ticket may hold is bounded per org, a compressed body is bounded before
it is inflated, and the routes that need no login show no org's data."""

import base64
import resource
import zlib
from collections.abc import AsyncIterator

import pytest

from projections.registry import all_projections
from services.auth.tokens import PERMISSIONS, TokenService
from services.eventstore import db
from services.eventstore.subscription import catch_up
from tests.conftest import Client, bearer
from tests.integration.support import configure, seed, serve

ORG = "org-limits"
T = "/api/v1/tickets/1"


@pytest.fixture
async def api(pool: db.Pool, tokens: TokenService) -> AsyncIterator[Client]:
    await seed(pool, 1, oid=ORG)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    client = await serve(pool, tokens)
    client.session.headers.update(bearer(tokens.mint("a@x", {ORG: list(PERMISSIONS)}, ttl_s=600)))
    yield client
    await client.close()


def gzip_of_zeros(size: int) -> bytes:
    """A gzip stream of `size` zero bytes, made without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1_000_000)
    return b"".join([*(packer.compress(block) for _ in range(size // len(block))), packer.flush()])


async def test_a_ticket_holds_at_most_what_its_org_allows(pool: db.Pool, api: Client) -> None:
    await configure(pool, ORG, max_notes_per_ticket=2, max_entities_per_ticket=1, max_artifacts_per_ticket=1)
    for i in range(2):
        r = await api.post(f"{T}/notes?oid={ORG}", json={"content": f"note {i}"})
        assert r.status == 201
    cases = [
        ("notes", {"content": "one too many"}, "max_notes_per_ticket"),
        ("entities", {"entity_type": "ip", "entity_value": "203.0.113.1"}, None),
        ("entities", {"entity_type": "ip", "entity_value": "203.0.113.2"}, "max_entities_per_ticket"),
        ("artifacts", {"artifact_type": "pcap"}, None),
        ("artifacts", {"artifact_type": "pcap"}, "max_artifacts_per_ticket"),
    ]
    for what, body, limit in cases:
        r = await api.post(f"{T}/{what}?oid={ORG}", json=body)
        if limit is None:
            assert r.status == 201, await r.text()
        else:
            assert r.status == 409 and limit in (await r.json())["error"], await r.text()
    events = await (await api.get(f"{T}?oid={ORG}")).json()
    assert [e["type"] for e in events["events"]].count("note_added") == 2


async def test_a_compressed_body_is_bounded_before_it_is_inflated(api: Client) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bomb = gzip_of_zeros(2_000_000_000)  # 2 GB as ~2 MB
    r = await api.post(f"{T}/notes?oid={ORG}", data=bomb,
                       headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})  # fmt: skip
    assert r.status == 413
    smaller = base64.b64encode(gzip_of_zeros(500_000_000)).decode()  # fits the body, not the data
    r = await api.post(
        "/v1/extension/request/ext-ticketing",
        data={"oid": ORG, "action": "get_ticket_count", "gzdata": smaller},
    )
    assert r.status == 422 and (await r.json())["field"] == "gzdata"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 300, f"the process grew {grown_mb:.0f} MB: a body was inflated whole"


async def test_the_routes_without_a_login_show_no_org_data(pool: db.Pool, api: Client) -> None:
    async with pool.acquire() as conn:
        secrets = [ORG] + [
            v for r in await conn.fetch("SELECT ticket_id::text, detection_id FROM tickets") for v in r
        ]
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        r = await api.get(path, headers={"Authorization": ""})
        text = await r.text()
        assert r.status == 200, path
        assert not any(s in text for s in secrets), path
