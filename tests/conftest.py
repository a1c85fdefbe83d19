"""Shared fixtures: one embedded broker and PostgreSQL per test session (or the servers named by
KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL), a fresh database and fresh topic names per test."""

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.auth.tokens import TokenService
from services.devstack.embedded import RUNTIME_ROLE, Infra, as_role, ensure_role, infrastructure
from services.eventstore import db
from services.eventstore.layout import reshard
from services.eventstore.migrate import migrate
from services.settings import Settings

TEMPLATE_DB = "ticketing_test_template"
# The API under test, as aiohttp's test client serves it.
Client = TestClient[web.Request, web.Application]


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


async def _make_template(admin_url: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}")
        await conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
    finally:
        await conn.close()
    await ensure_role(admin_url, RUNTIME_ROLE)
    conn = await asyncpg.connect(_with_db(admin_url, TEMPLATE_DB))
    try:
        await migrate(conn, RUNTIME_ROLE)  # every test database is a copy, grants included
        # `TICKETING_LOG_SHARDS=4 make test`: the whole suite on a sharded log
        await reshard(conn, Settings.from_env({"TICKETING_ENV": "test", **os.environ}).log_shards)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    state = tmp_path_factory.mktemp("infra")
    with infrastructure(
        state,
        bootstrap_servers=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        database_url=os.environ.get("DATABASE_URL") or None,
        fast_unsafe=True,
    ) as started:
        asyncio.run(_make_template(started.database_url))
        yield started


async def _create_database(admin_url: str, name: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
    finally:
        await conn.close()


@pytest.fixture
def database_url(infra: Infra) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    asyncio.run(_create_database(infra.database_url, name))
    return _with_db(infra.database_url, name)


@pytest.fixture
def service_env(infra: Infra, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for a service process of this test: its own database, topics and group. The
    services run as the runtime role, as production's should (least privilege); set-up code (the
    `pool` fixture) runs as the owner."""
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap_servers,
        "DATABASE_URL": as_role(database_url, RUNTIME_ROLE),
        "TICKETING_MIGRATION_DATABASE_URL": database_url,
        "TICKETING_DB_RUNTIME_ROLE": RUNTIME_ROLE,
        "TICKETING_ENV": "test",
        "TICKETING_TOPIC_PREFIX": f"t{run}.",
        "TICKETING_INGEST_GROUP": f"t{run}-ingest",
        "TICKETING_STATE_DIR": str(tmp_path / "state"),
        "TICKETING_DETECTIONS_PARTITIONS": "4",
        "TICKETING_LOG_LEVEL": "INFO",
        "TICKETING_JWT_SECRET": uuid.uuid4().hex + uuid.uuid4().hex,
        "TICKETING_EGRESS_ALLOW": "127.0.0.0/8,::1",  # the tests' webhook and appliance servers
    }


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    return Settings.from_env(service_env)


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[db.Pool]:
    from services.bootstrap import create_pool

    p = await create_pool(settings.as_owner(), max_size=20)  # set-up code may do what services may not
    yield p
    await p.close()


@pytest.fixture
def tokens(settings: Settings) -> TokenService:
    from services.bootstrap import token_service

    return token_service(settings)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def counts_drift(conn: db.Connection) -> list[asyncpg.Record]:
    """Where the trigger-kept ticket_counts disagree with counting the tickets (empty: consistent)."""
    return await conn.fetch(
        """
        SELECT * FROM (SELECT oid, status, severity, acknowledged, resolved, n FROM ticket_counts WHERE n <> 0) a
        FULL JOIN (SELECT oid, status, severity, acknowledged_at IS NOT NULL AS acknowledged,
                          resolved_at IS NOT NULL AS resolved, count(*) AS n
                   FROM tickets GROUP BY 1, 2, 3, 4, 5) b USING (oid, status, severity, acknowledged, resolved)
        WHERE a.n IS DISTINCT FROM b.n
        """
    )
