"""Tenant isolation, generated from the router: a route added later is covered automatically."""

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import aiohttp
import pytest

from domain.commands import AddArtifact, AddEntity, AddTask, AddTelemetry, TicketChanges, UpdateTicket
from domain.evidence import Artifact, Entity, Telemetry
from domain.rules import RuleMatch
from domain.suppressions import SuppressionRequest
from domain.tasks import Task
from projections.registry import all_projections
from services.api.app import ROUTES
from services.api.auth import SIGNED_IN, OrgScope, Route
from services.auth import api_keys, credentials, sessions
from services.auth.oidc import Identity
from services.auth.tokens import PERMISSIONS, TokenService
from services.bootstrap import make_handler
from services.commands.configs import load_configs
from services.commands.envelope import CommandContext
from services.commands.handlers import execute_one
from services.commands.repository import find_ticket_id
from services.commands.suppressions import create_suppression
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.scheduler.retention import run_retention
from tests.conftest import Client, bearer
from tests.integration.support import configure, seed, serve, sso_settings

ORG_A, ORG_B = "aaaaaaaa-0000-4000-8000-00000000000a", "bbbbbbbb-0000-4000-8000-00000000000b"
PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"}  # deliberately unauthenticated

# A valid body for every route that takes one; a new write route must add its example here.
T = "/api/v1/tickets"
# Let through by the access check, then refused by what the route does (org A was never purged).
# Allowed, then refused for what the example asks: re-subscribing an org never purged; splitting
# the one detection of a ticket.
STREAMS = {"/api/v1/stream"}
AUTHORIZED_BUT_REFUSED = {
    ("POST", "/api/v1/orgs/{oid}/subscription"): 409,
    ("POST", T + "/{number}/split"): 422,
}
SOON = (datetime.now(UTC) + timedelta(days=1)).isoformat()
EXAMPLE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", T + "/{number}/notes"): {"content": "looked at it", "note_type": "analysis"},
    ("PATCH", T + "/{number}"): {"assignee": "alice@example.com", "tags": ["phishing"]},
    ("POST", T + "/bulk-update"): {"ticket_numbers": [1, 2], "update": {"classification": "true_positive"}},
    ("POST", T + "/merge"): {"target_ticket_number": 1, "source_ticket_numbers": [2]},
    ("POST", T + "/{number}/split"): {"detection_ids": ["matrix-none"]},
    ("POST", T + "/{number}/tasks"): {"title": "matrix"},
    ("PATCH", T + "/{number}/tasks/{task_id}"): {"done": True},
    ("POST", T + "/{number}/detections"): {"detection_id": "manual-1", "detection_cat": "c"},
    ("POST", T + "/{number}/entities"): {"entity_type": "ip", "entity_value": "203.0.113.9"},
    ("PATCH", T + "/{number}/entities/{entity_id}"): {"verdict": "benign"},
    ("POST", T + "/{number}/telemetry"): {"atom": "a2", "sid": "s2"},
    ("PATCH", T + "/{number}/telemetry/{telemetry_id}"): {"relevance": "initial access"},
    ("POST", T + "/{number}/artifacts"): {"artifact_type": "pcap", "url": "s3://bucket/x.pcap"},
    ("DELETE", T + "/{number}/detections/{detection_id}"): {},
    ("DELETE", T + "/{number}/entities/{entity_id}"): {},
    ("DELETE", T + "/{number}/telemetry/{telemetry_id}"): {},
    ("DELETE", T + "/{number}/artifacts/{artifact_id}"): {},
    ("POST", T + "/{number}/artifacts/upload"): {"file": "matrix.bin"},  # multipart (request_for)
    ("DELETE", "/api/v1/credentials/tokens/{jti}"): {},
    ("DELETE", "/api/v1/credentials/api-keys/{key_id}"): {},
    ("DELETE", "/api/v1/credentials/sessions/{session_id}"): {},
    ("POST", "/api/v1/credentials/api-keys"): {"name": "matrix key", "permissions": ["ticket.track"]},
    ("POST", "/api/v1/suppressions"): {"match": {"category": "x"}, "reason": "matrix", "expires_at": SOON},
    ("DELETE", "/api/v1/suppressions/{suppression_id}"): {},
    ("PUT", "/api/v1/analysts/{email}"): {"away_until": None},
    ("POST", "/v1/extension/request/ext-ticketing"): {"action": "get_ticket_count", "data": "{}"},
    ("PUT", "/api/v1/config/{oid}"): {"retention_days": 30},
    ("POST", "/api/v1/config/{oid}/signing-secret"): {"rotate": True},
    ("DELETE", "/api/v1/orgs/{oid}"): {},
    ("POST", "/api/v1/orgs/{oid}/subscription"): {},
    ("POST", "/rest/api/issue"): {"fields": {"summary": "ExtraHop Detection: 77: matrix"}},
    ("PATCH", "/api/v1/detections/{detection_id}"): {"ticket_id": "TK-1", "assignee": "sally"},
    ("POST", "/rest/api/2/issue"): {"fields": {"summary": "ExtraHop Detection: 78: matrix"}},
}
EXAMPLE_QUERIES: dict[str, str] = {"/api/v1/entities/search": "&entity_type=ip&entity_value=203.0.113.7"}

PROTECTED = [r for r in ROUTES if r.path not in PUBLIC]


def test_every_route_declares_a_permission_and_an_org_scope() -> None:
    assert PROTECTED, "no routes?"
    for route in ROUTES:
        if route.path in PUBLIC:
            continue
        if route.scope is OrgScope.SELF:  # about the credential itself (whoami): any valid one
            assert route.permission == SIGNED_IN and route.method == "GET"
            continue
        assert route.permission in PERMISSIONS, f"{route.method} {route.path} has no declared permission"
        assert route.scope is not None, f"{route.method} {route.path} has no declared org scope"
        if route.method != "GET":
            assert (route.method, route.path) in EXAMPLE_BODIES, f"add an example body for {route.path}"


def request_for(route: Route, oid: str, ids: dict[str, str]) -> tuple[str, dict[str, Any]]:
    number = "3" if route.path.startswith("/api/v1/archive/") else "1"  # ticket 3 is the archived one
    path = route.path.replace("{number}", number).replace("{oid}", oid)
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    kwargs: dict[str, Any] = {}
    body = dict(EXAMPLE_BODIES.get((route.method, route.path), {}))
    if route.scope is OrgScope.ORGS:
        path += f"?oids={oid}" + EXAMPLE_QUERIES.get(route.path, "")
    elif route.scope is OrgScope.ORG:
        path += f"?oid={oid}"
    elif route.scope is OrgScope.BODY:
        body["oid"] = oid
    if route.scope is OrgScope.FORM:
        kwargs["data"] = {"oid": oid, **body}
    elif "file" in body:  # an upload: multipart, with content of its own each time
        upload = aiohttp.FormData()
        upload.add_field("file", secrets.token_bytes(64), filename=body["file"])
        kwargs["data"] = upload
    elif route.method != "GET":
        kwargs["json"] = body
    return path, kwargs


async def add_evidence(pool: db.Pool, oid: str) -> dict[str, str]:
    """An entity, telemetry reference and artifact on ticket 1 of the org; their ids by path name."""
    handler, ctx = make_handler(), CommandContext(actor="setup")
    entity = Entity(uuid.uuid4(), "ip", "203.0.113.7", verdict="malicious")
    telemetry = Telemetry(uuid.uuid4(), "atom-1", "sid-1")
    artifact = Artifact(uuid.uuid4(), "memory_dump", path="/evidence/mem.raw")
    task = Task(uuid.uuid4(), "Isolate the host")
    async with pool.acquire() as conn:
        ticket_id = await find_ticket_id(conn, oid, 1)
        assert ticket_id is not None
        async with conn.transaction():
            outcome = await handler.execute(
                conn,
                [(AddEntity(ticket_id, entity), ctx), (AddTelemetry(ticket_id, telemetry), ctx),
                 (AddArtifact(ticket_id, artifact), ctx), (AddTask(ticket_id, task), ctx)],
            )  # fmt: skip
    state = outcome.states[ticket_id]
    assert state.first_detection is not None
    return {
        "entity_id": str(entity.entity_id),
        "telemetry_id": str(telemetry.telemetry_id),
        "artifact_id": str(artifact.artifact_id),
        "task_id": str(task.task_id),
        "detection_id": state.first_detection.detection_id,
        **await credentials_of(pool, oid),
    }


async def credentials_of(pool: db.Pool, oid: str) -> dict[str, str]:
    """A recorded token and an API key of the org, for the routes that list and revoke them."""
    token = TokenService(secrets.token_urlsafe(48)).mint(
        f"someone@{oid}", {oid: ["investigation.get"]}, ttl_s=600
    )
    async with pool.acquire() as conn:
        jti = await credentials.record(conn, token, "matrix")
        key = await api_keys.create(conn, oid, f"matrix-{oid}", [api_keys.TRACK], "matrix")
        held = SuppressionRequest(
            RuleMatch(category="matrix"), "matrix", datetime.now(UTC) + timedelta(days=1)
        )
        async with conn.transaction():
            sid = uuid.uuid4()
            await create_suppression(conn, oid, held, sid, CommandContext("setup"), datetime.now(UTC))
    # A console session (single sign-on) whose group has a role in the org.
    await configure(pool, oid, role_mappings={f"matrix-{oid}": ["investigation.get"]})
    async with pool.acquire() as conn:
        identity = Identity(f"user@{oid}", f"sub-{oid}", (f"matrix-{oid}",), "id-token")
        cookie = await sessions.open_session(conn, identity, "http://idp.example", 3600)
        session_id = await conn.fetchval(
            "SELECT session_id FROM console_sessions WHERE digest = $1", sessions.digest(cookie)
        )
    # The matrix's right token is a@x's: it may take itself out of rotation.
    return {"jti": jti, "key_id": key.split("_")[1], "suppression_id": str(sid), "email": "a@x",
            "session_id": session_id}  # fmt: skip


class Served(NamedTuple):
    client: Client
    ids: dict[str, dict[str, str]]  # org -> path placeholder -> id


@pytest.fixture
async def served(
    pool: db.Pool, tokens: TokenService, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Served]:
    await seed(pool, 3, oid=ORG_A)
    await seed(pool, 3, oid=ORG_B)
    ids = {ORG_A: await add_evidence(pool, ORG_A), ORG_B: await add_evidence(pool, ORG_B)}
    for oid in (ORG_A, ORG_B):  # ticket 3 of each org is closed and archived
        async with pool.acquire() as conn:
            third = await find_ticket_id(conn, oid, 3)
        assert third is not None
        await execute_one(
            pool, make_handler(), UpdateTicket(third, TicketChanges(status="closed")), CommandContext("t")
        )
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG_A, ORG_B])
    later = datetime.now(UTC) + timedelta(days=3650)
    assert await run_retention(pool, configs, tmp_path_factory.mktemp("archive"), later) == 2
    client = await serve(pool, tokens, oidc=sso_settings())
    for oid in (ORG_A, ORG_B):  # the artifact of the routes is an uploaded file (its content readable)
        upload = aiohttp.FormData()
        upload.add_field("file", f"evidence of {oid}".encode(), filename="evidence.txt")
        writer = tokens.mint("setup@x", {oid: ["investigation.get", "investigation.set"]}, ttl_s=60)
        r = await client.post(
            f"/api/v1/tickets/1/artifacts/upload?oid={oid}", data=upload, headers=bearer(writer)
        )
        assert r.status == 201, await r.text()
        ids[oid]["artifact_id"] = (await r.json())["artifact_id"]
    yield Served(client, ids)
    await client.close()


async def org_a_secrets(pool: db.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT ticket_id::text, detection_id FROM tickets WHERE oid = $1", ORG_A)
        evidence = await conn.fetch("SELECT entity_id::text FROM ticket_entities WHERE oid = $1", ORG_A)
    return [ORG_A] + [v for r in rows for v in r] + [r[0] for r in evidence]


def cases(tokens: TokenService, route: Route) -> list[tuple[str, dict[str, str], int]]:
    assert route.permission is not None
    everything = list(PERMISSIONS)
    lacking = [p for p in PERMISSIONS if p != route.permission]
    other_org_status = 403 if route.scope is OrgScope.ORGS else 404
    if route.scope is OrgScope.SELF:
        other_org_status = 0  # any valid credential may ask who it is
    invalid = [
        ("no token", {}, 401),
        ("not a bearer token", {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ("malformed token", bearer("not.a.jwt"), 401),
        (
            "expired token",
            bearer(tokens.mint("a@x", {ORG_A: everything}, ttl_s=60, now=time.time() - 3600)),
            401,
        ),
        (
            "wrong signature",
            bearer(TokenService(secrets.token_urlsafe(48)).mint("a@x", {ORG_A: everything}, ttl_s=600)),
            401,
        ),
    ]
    other = (
        "other org's token",
        bearer(tokens.mint("b@x", {ORG_B: everything}, ttl_s=600)),
        other_org_status,
    )
    if route.scope is OrgScope.SELF:
        return [
            *invalid,
            other,
            ("a token with one right", bearer(tokens.mint("a@x", {ORG_A: lacking[:1]}, ttl_s=600)), 0),
        ]
    if route.scope is OrgScope.OPERATOR:  # even the org's own admin with every right is refused
        operator = tokens.mint("ops@x", {"*": [route.permission]}, ttl_s=600, operator=True)
        return [
            *invalid,
            ("other org's token", bearer(tokens.mint("b@x", {ORG_B: everything}, ttl_s=600)), 403),
            (
                "the org's token with every right",
                bearer(tokens.mint("a@x", {ORG_A: everything}, ttl_s=600)),
                403,
            ),
            ("an operator token", bearer(operator), 0),
        ]
    return [
        *invalid,
        other,
        ("without the permission", bearer(tokens.mint("a@x", {ORG_A: lacking}, ttl_s=600)), 403),
        ("the right token", bearer(tokens.mint("a@x", {ORG_A: [route.permission]}, ttl_s=600)), 0),
    ]


async def key_cases(
    pool: db.Pool, tokens: TokenService, route: Route
) -> list[tuple[str, dict[str, str], int]]:
    """Integration routes take an org API key, whose org is the route's: never a user's token."""
    everything = list(PERMISSIONS)
    async with pool.acquire() as conn:
        right = await api_keys.create(conn, ORG_A, f"right-{route.path}", [api_keys.TRACK], "t")
        lacking = await api_keys.create(conn, ORG_A, f"lacking-{route.path}", ["investigation.get"], "t")
    return [
        ("no token", {}, 401),
        ("malformed key", {"Authorization": "ExtraHop apikey=shk_nope"}, 401),
        ("a user's token with every right", bearer(tokens.mint("a@x", {ORG_A: everything}, ttl_s=600)), 403),
        ("a key without the permission", {"Authorization": f"ExtraHop apikey={lacking}"}, 403),
        ("the right key", {"Authorization": f"ExtraHop apikey={right}"}, 0),
    ]


@pytest.mark.parametrize("route", PROTECTED, ids=[f"{r.method} {r.path}" for r in PROTECTED])
async def test_route_matrix(served: Served, pool: db.Pool, tokens: TokenService, route: Route) -> None:
    app_client, ids = served
    secrets_of_a = await org_a_secrets(pool)
    path, kwargs = request_for(route, ORG_A, ids[ORG_A])
    credentials = (
        await key_cases(pool, tokens, route) if route.scope is OrgScope.KEY else cases(tokens, route)
    )
    streaming = route.path in STREAMS  # its body never ends: what it sends is test_stream.py's
    for name, headers, expected in credentials:
        r = await app_client.request(route.method, path, headers=headers, **kwargs)
        text = "" if streaming and r.status < 300 else await r.text()
        r.close()
        if expected:
            assert r.status == expected, f"{name}: {r.status} {text}"
            assert r.content_type == "application/json" and "error" in await r.json()
            assert not any(s in text for s in secrets_of_a[1:]), f"{name} leaked org A's data"
            if expected == 401:
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
        else:
            allowed = AUTHORIZED_BUT_REFUSED.get((route.method, route.path))
            assert 200 <= r.status < 300 or r.status == allowed, f"{name}: {r.status} {text}"
    # Reads with org B's token over org B show nothing of org A.
    if route.method == "GET":
        path_b, kwargs_b = request_for(route, ORG_B, ids[ORG_B])
        token_b = tokens.mint("b@x", {ORG_B: list(PERMISSIONS)}, ttl_s=600)
        r = await app_client.request(route.method, path_b, headers=bearer(token_b), **kwargs_b)
        assert r.status == 200
        text = "" if streaming else await r.text()
        r.close()
        assert not any(s in text for s in secrets_of_a)


async def test_cross_org_queries_need_every_org(served: Served, tokens: TokenService) -> None:
    app_client = served.client
    both = tokens.mint("soc@x", {ORG_A: ["investigation.get"], ORG_B: ["investigation.get"]}, ttl_s=600)
    r = await app_client.get(f"/api/v1/tickets?oids={ORG_A},{ORG_B}", headers=bearer(both))
    assert r.status == 200
    assert {t["oid"] for t in (await r.json())["tickets"]} == {ORG_A, ORG_B}
    only_a = tokens.mint("a@x", {ORG_A: ["investigation.get"]}, ttl_s=600)
    r = await app_client.get(f"/api/v1/tickets?oids={ORG_A},{ORG_B},org-c", headers=bearer(only_a))
    assert r.status == 403
    message = (await r.json())["error"]
    assert ORG_B in message and "org-c" in message and ORG_A not in message


async def test_operator_wildcard_sees_every_org(served: Served, tokens: TokenService) -> None:
    app_client = served.client
    op = tokens.mint("ops@x", {"*": ["investigation.get"]}, ttl_s=600, operator=True)
    r = await app_client.get(f"/api/v1/tickets?oids={ORG_A},{ORG_B}", headers=bearer(op))
    assert r.status == 200 and len((await r.json())["tickets"]) == 4  # 3 per org, 1 of each archived
