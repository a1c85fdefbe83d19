"""Helpers several integration tests share: seeding through the real ingest path, an org's
configuration, and the API app on a test server."""

import asyncio
import json
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from aiohttp.test_utils import TestClient, TestServer

from domain.commands import OpenTicket
from domain.detections import Detection
from domain.severity import Severity
from projections.registry import all_projections
from services.api.app import create_app
from services.api.ratelimit import RateLimiter
from services.auth import api_keys
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands.configs import update_config
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler, Outcome
from services.commands.indexes import allocate_ticket_numbers
from services.delivery.egress import Fence
from services.devstack.samples import generate
from services.eventstore import db
from services.eventstore.placement import Placement
from services.eventstore.postgres import shard_heads
from services.eventstore.subscription import catch_up, checkpoints
from services.evidence.store import EvidenceStore
from services.ingest.pipeline import RawRecord, ingest_batch
from services.settings import OidcSettings, Redacted
from tests.conftest import Client

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LOOPBACK = Fence.allowing(["127.0.0.0/8", "::1"])
ADMIN = CommandContext(actor="admin@example.com")


class Sink:
    """Stands in for the dead-letter producer: keeps what it is handed."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def __call__(self, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.messages.extend(v for _, v in messages)


class NewTicket(NamedTuple):
    """A ticket opened directly by command, with the id and severity a test chooses (the doors
    decide both through the intake)."""

    ticket_id: uuid.UUID
    oid: str
    severity: Severity
    detection: Detection | None
    ctx: CommandContext


async def open_tickets(conn: db.Connection, handler: CommandHandler, new: Sequence[NewTicket]) -> Outcome:
    numbers = await allocate_ticket_numbers(conn, Counter(t.oid for t in new))
    issued = {oid: iter(n) for oid, n in numbers.items()}
    commands = [
        (OpenTicket(t.ticket_id, t.oid, next(issued[t.oid]), t.severity, t.detection), t.ctx) for t in new
    ]
    return await handler.execute(conn, commands)


async def seed(pool: db.Pool, n: int, oid: str = "org-x") -> None:
    detections = list(generate(oid, n, seed=zlib.crc32(oid.encode())))  # distinct ids per org
    batch = [RawRecord("d", 0, i, oid.encode(), json.dumps(d).encode()) for i, d in enumerate(detections)]
    await ingest_batch(pool, make_handler(), batch, Sink(), default_oid=None)


def lc(oid: str, minutes: float, cat: str = "c", sensor: str = "s", priority: int = 3) -> dict[str, Any]:
    ts = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    return {"detect_id": str(uuid.uuid4()), "cat": cat, "priority": priority, "ts": ts,
            "routing": {"oid": oid, "sid": sensor, "hostname": "h"}}  # fmt: skip


async def ingest(
    pool: db.Pool, detections: list[dict[str, Any]], batch: int = 1000, first_offset: int = 0
) -> None:
    """Through the Kafka door's path, as read at offsets from `first_offset` (the same offsets
    again: a redelivery)."""
    records = [
        RawRecord("d", 0, first_offset + i, None, json.dumps(d).encode()) for i, d in enumerate(detections)
    ]
    for i in range(0, len(records), batch):
        await ingest_batch(pool, make_handler(), records[i : i + batch], Sink(), default_oid=None)


async def configure(pool: db.Pool, oid: str, **patch: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, oid, patch, ADMIN, T0)


CLIENT_ID, CLIENT_SECRET = "soc-ticketing", "test-client-secret-4d1f6a0e9b7c2358"  # (tests/e2e/oidc.py's too)


def sso_settings(issuer: str = "http://127.0.0.1:9/never-called", port: int = 8080) -> OidcSettings:
    """Single sign-on settings for an app under test (the provider is called at sign-in only)."""
    return OidcSettings(
        issuer=issuer,
        client_id=CLIENT_ID,
        client_secret=Redacted(CLIENT_SECRET),
        redirect_url=f"http://127.0.0.1:{port}/auth/callback",
        scopes="openid email profile groups",
        groups_claim="groups",
        operator_group="soc-operators",
        idle_timeout_s=1800,
        absolute_timeout_s=3600,
        cookie_secure=False,
    )


async def serve(
    pool: db.Pool,
    tokens: TokenService,
    limiter: RateLimiter | None = None,
    oidc: OidcSettings | None = None,
    evidence_dir: Path | None = None,
    evidence: EvidenceStore | None = None,
    placement: Placement | None = None,
) -> Client:
    # The tests' endpoints listen on loopback, which the egress fence allows only when told so.
    app = create_app(
        pool,
        make_handler(),
        tokens,
        limiter or RateLimiter(10_000, 10_000),
        egress=LOOPBACK,
        oidc=oidc,
        evidence_dir=evidence_dir or Path(tempfile.mkdtemp(prefix="ticketing-evidence-")),
        evidence=evidence,
        placement=placement,
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def new_key(
    pool: db.Pool, oid: str, name: str = "extrahop-prod", perms: list[str] | None = None
) -> str:
    """An org API key, as `token key create` makes one (ticket.track unless told otherwise)."""
    async with pool.acquire() as conn:
        return await api_keys.create(conn, oid, name, perms or [api_keys.TRACK], "test")


def extrahop(key: str) -> dict[str, str]:
    """The header as the ExtraHop seed's script sends a key."""
    return {"Authorization": f"ExtraHop apikey={key}"}


@asynccontextmanager
async def projecting(pool: db.Pool) -> AsyncIterator[None]:
    """A projector keeping the read tables up while the block runs, as the process does."""
    stop = asyncio.Event()

    async def project() -> None:
        while not stop.is_set():
            for p in all_projections():
                await catch_up(pool, p.name, p.apply)
            await asyncio.sleep(0.1)

    task = asyncio.create_task(project())
    try:
        yield
    finally:
        stop.set()
        await task


async def caught_up(conn: db.Connection, name: str) -> bool:
    """The subscriber's checkpoint is at the head of every shard of the log."""
    heads = await shard_heads(conn)  # (a rebuild leaves every shard at the log's head: past its own)
    return all(at >= head for at, head in zip(await checkpoints(conn, name), heads, strict=True))
