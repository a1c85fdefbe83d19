"""Helpers several integration tests share: seeding through the real ingest path, an org's
configuration, and the API app on a test server."""

import json
import uuid
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from services.api.app import create_app
from services.api.ratelimit import RateLimiter
from services.auth import api_keys
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands.configs import update_config
from services.commands.handlers import CommandContext
from services.devstack.samples import generate
from services.ingest.pipeline import RawRecord, ingest_batch
from services.outbound.egress import Fence

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LOOPBACK = Fence.allowing(["127.0.0.0/8", "::1"])
ADMIN = CommandContext(actor="admin@example.com")


class Sink:
    """Stands in for the dead-letter producer: keeps what it is handed."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def __call__(self, messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        self.messages.extend(v for _, v in messages)


async def seed(pool: asyncpg.Pool, n: int, oid: str = "org-x") -> None:
    detections = list(generate(oid, n, seed=zlib.crc32(oid.encode())))  # distinct ids per org
    batch = [RawRecord("d", 0, i, oid.encode(), json.dumps(d).encode()) for i, d in enumerate(detections)]
    await ingest_batch(pool, make_handler(), batch, Sink(), default_oid=None)


def lc(oid: str, minutes: float, cat: str = "c", sensor: str = "s", priority: int = 3) -> dict[str, Any]:
    ts = int((T0 + timedelta(minutes=minutes)).timestamp() * 1000)
    return {"detect_id": str(uuid.uuid4()), "cat": cat, "priority": priority, "ts": ts,
            "routing": {"oid": oid, "sid": sensor, "hostname": "h"}}  # fmt: skip


async def ingest(pool: asyncpg.Pool, detections: list[dict[str, Any]], batch: int = 1000) -> None:
    records = [RawRecord("d", 0, i, None, json.dumps(d).encode()) for i, d in enumerate(detections)]
    for i in range(0, len(records), batch):
        await ingest_batch(pool, make_handler(), records[i : i + batch], Sink(), default_oid=None)


async def configure(pool: asyncpg.Pool, oid: str, **patch: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await update_config(conn, oid, patch, ADMIN, T0)


async def serve(pool: asyncpg.Pool, tokens: TokenService, limiter: RateLimiter | None = None) -> TestClient:
    # The tests' endpoints listen on loopback, which the egress fence allows only when told so.
    app = create_app(pool, make_handler(), tokens, limiter or RateLimiter(10_000, 10_000), egress=LOOPBACK)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def new_key(
    pool: asyncpg.Pool, oid: str, name: str = "extrahop-prod", perms: list[str] | None = None
) -> str:
    """An org API key, as `token key create` makes one (ticket.track unless told otherwise)."""
    async with pool.acquire() as conn:
        return await api_keys.create(conn, oid, name, perms or [api_keys.TRACK], "test")


def extrahop(key: str) -> dict[str, str]:
    """The header as the ExtraHop seed's script sends a key."""
    return {"Authorization": f"ExtraHop apikey={key}"}
