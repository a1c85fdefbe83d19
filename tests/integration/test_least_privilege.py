"""Least privilege in PostgreSQL: the services run as a role that can append to the event store but
never rewrite it, cannot change the schema or switch its guards off, and reaches the archive and
purge paths only through the owner's narrow functions; only the migrate step migrates."""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest

from services.bootstrap import create_pool, make_handler, schema_pending
from services.cli import main as cli
from services.commands.configs import load_configs
from services.devstack.embedded import RUNTIME_ROLE, Infra, as_role
from services.eventstore import db
from services.scheduler.retention import purge_archives, run_retention
from services.settings import Settings
from tests.integration.test_retention import ORG, T0, Clock, setup


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[db.Pool]:
    """The pool a service gets: the runtime role's."""
    assert settings.database_url and f"//{RUNTIME_ROLE}@" in settings.database_url
    p = await create_pool(settings, max_size=4)
    yield p
    await p.close()


async def test_the_runtime_role_cannot_rewrite_the_store_or_unguard_it(
    pool: db.Pool, runtime: db.Pool
) -> None:
    clock = Clock()
    closed, resolved, still_open = await setup(pool, make_handler(clock), clock)
    async with runtime.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM events")
        for sql in (
            "DELETE FROM events",
            "UPDATE events SET type = 'x'",
            "TRUNCATE events",
            "ALTER TABLE events DISABLE TRIGGER USER",
            "DROP TRIGGER events_no_update ON events",
            "CREATE TABLE sneaky (x int)",
            "INSERT INTO schema_migrations (name) VALUES ('9999_fake.sql')",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        # The guard's own switch is a setting anyone may set: as the runtime role it opens nothing.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('ticketing.archive_stream', $1, true)", str(closed))
                await conn.execute("DELETE FROM events WHERE stream_id = $1", closed)
        # The owner's functions act only on what they can vouch for.
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="not resolved or closed"):
            await conn.execute("SELECT ticketing_archive_stream($1, now())", still_open)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no unpurged archive"):
            await conn.execute("SELECT ticketing_purge_stream($1)", resolved)
        assert await conn.fetchval("SELECT count(*) FROM events") == stored


async def test_the_runtime_role_archives_and_purges_through_the_owners_functions(
    pool: db.Pool, runtime: db.Pool, tmp_path: Path
) -> None:
    clock = Clock()
    closed, resolved, still_open = await setup(runtime, make_handler(clock), clock)  # written as a service
    async with runtime.acquire() as conn:
        configs = await load_configs(conn, [ORG])
    archived_at = T0 + timedelta(days=31)
    assert await run_retention(runtime, configs, tmp_path, archived_at) == 2
    assert await purge_archives(runtime, archived_at + timedelta(days=731)) == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events_archive") == 0
        live = {r[0] for r in await conn.fetch("SELECT DISTINCT stream_id FROM events")}
        assert still_open in live and closed not in live and resolved not in live
        assert await conn.fetchval("SELECT count(*) FROM archive_log WHERE purged_at IS NOT NULL") == 2


async def test_a_service_waits_for_the_migrate_step_and_never_migrates(
    infra: Infra, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    infra_admin_url = infra.database_url
    name = "t_empty_" + settings.topics.detections.split(".")[0]
    conn = await asyncpg.connect(infra_admin_url)
    try:
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()
    owner_url = infra_admin_url.rpartition("/")[0] + "/" + name
    empty = Settings.from_env(
        {"KAFKA_BOOTSTRAP_SERVERS": "unused:9092", "DATABASE_URL": as_role(owner_url, RUNTIME_ROLE),
         "TICKETING_MIGRATION_DATABASE_URL": owner_url, "TICKETING_DB_RUNTIME_ROLE": RUNTIME_ROLE}
    )  # fmt: skip
    assert len(await schema_pending(empty)) >= 16
    with caplog.at_level(logging.WARNING, logger="services.outages"), pytest.raises(TimeoutError):
        await asyncio.wait_for(create_pool(empty), 2)
    assert any("run `python -m services.cli migrate`" in r.getMessage() for r in caplog.records)
    assert len(await schema_pending(empty)) >= 16  # waiting changed nothing


def test_migrate_check_tells_whether_the_database_is_behind(
    service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for key, value in service_env.items():
        monkeypatch.setenv(key, value)
    assert cli(["migrate", "--check"]) == 0
    assert "the schema is current" in capsys.readouterr().out
