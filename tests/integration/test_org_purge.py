"""Unsubscribing an org deletes all its ticket data, table by table, and nothing of any other org;
it keeps a tombstone, publishes org_purged, drops the org's detections still in flight, and is
idempotent and resumable after a crash halfway."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from domain.commands import TicketChanges, UpdateTicket
from projections.registry import all_projections
from services.auth import api_keys, credentials
from services.auth.tokens import TokenService
from services.bootstrap import make_handler
from services.commands import org_purge
from services.commands.configs import load_configs
from services.commands.envelope import CommandContext
from services.commands.handlers import execute_one
from services.commands.repository import find_ticket_id
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.subscription import catch_up
from services.evidence.store import LocalStore
from services.kafka.messages import to_message
from services.scheduler.retention import run_retention
from tests.conftest import bearer
from tests.integration.support import configure, ingest, lc, seed, serve

GONE, KEPT = "org-gone", "org-kept"


async def populate(pool: db.Pool, tokens: TokenService, archive: Path) -> None:
    """Both orgs with every kind of data: tickets, evidence, configuration, secrets, credentials,
    an archived ticket with its file."""
    for oid in (GONE, KEPT):
        await configure(pool, oid, auto_grouping_enabled=True, retention_days=1,
                        extrahop={"url": "https://eh.example", "api_key": f"key-of-{oid}"})  # fmt: skip
        await seed(pool, 4, oid=oid)
        async with pool.acquire() as conn:
            await api_keys.create(conn, oid, "tracker", [api_keys.TRACK], "test")
            await credentials.record(
                conn, tokens.mint(f"ana@{oid}", {oid: ["investigation.get"]}, ttl_s=600), "t"
            )
            first = await find_ticket_id(conn, oid, 1)
        assert first is not None
        await execute_one(
            pool, make_handler(), UpdateTicket(first, TicketChanges(status="closed")), CommandContext("t")
        )
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [GONE, KEPT])
    assert await run_retention(pool, configs, archive, datetime.now(UTC) + timedelta(days=30)) == 2


async def snapshot(pool: db.Pool) -> dict[str, set[str]]:
    """Every row of every table, as text."""
    async with pool.acquire() as conn:
        tables = [
            r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        return {t: {r[0] for r in await conn.fetch(f'SELECT t::text FROM "{t}" t')} for t in tables}


async def ids_of(pool: db.Pool, oid: str) -> set[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT stream_id::text FROM events WHERE metadata->>'oid' = $1", oid
        )
    return {r[0] for r in rows}


async def test_an_org_purge_deletes_everything_of_the_org_and_nothing_else(
    pool: db.Pool, tokens: TokenService, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    await populate(pool, tokens, archive)
    gone_ids = await ids_of(pool, GONE)
    async with pool.acquire() as conn:
        live = await conn.fetchval("SELECT count(*) FROM tickets WHERE oid = $1", GONE)
    before = await snapshot(pool)
    assert any(GONE in row for row in before["events_archive"])  # there was an archive to purge
    assert (archive / GONE).is_dir() and (archive / KEPT).is_dir()
    evidence = LocalStore(tmp_path / "evidence")  # each org has a file in the evidence store

    async def one(data: bytes) -> AsyncIterator[bytes]:
        yield data

    for oid in (GONE, KEPT):
        await evidence.put(oid, one(f"evidence of {oid}".encode()), 1024)

    tombstone = await org_purge.purge_org(pool, GONE, "ops@example.com", archive, evidence=evidence)
    assert tombstone.completed_at is not None and tombstone.requested_by == "ops@example.com"
    assert tombstone.counts["events"] > 0 and tombstone.counts["tickets"] == live > 0
    after = await snapshot(pool)
    allowed_new = {"org_tombstones", "events", "subscription_checkpoints", "api_keys", "issued_tokens"}
    for table, rows in after.items():
        # Nothing of the gone org survives but its tombstone, the org_purged event and its
        # credentials, revoked (listed as such, not deleted).
        leftovers = [r for r in rows if GONE in r or any(i in r for i in gone_ids)]
        if table == "org_tombstones":
            assert len(leftovers) == 1
        elif table == "events":
            assert len(leftovers) == 1 and "org_purged" in leftovers[0]
        elif table in ("api_keys", "issued_tokens"):
            assert len(leftovers) == 1 and ",system:org-purge" in leftovers[0], (table, leftovers)
        else:
            assert leftovers == [], (table, leftovers[:2])
        # Everything of the other org is exactly as it was.
        if table not in allowed_new:
            removed = before.get(table, set()) - rows
            assert rows <= before.get(table, set()), (table, rows - before.get(table, set()))
            assert all(GONE in r or any(i in r for i in gone_ids) for r in removed), (table, removed)
    assert not (archive / GONE).exists() and (archive / KEPT).is_dir()
    assert await evidence.orgs() == [KEPT] and tombstone.counts["evidence_files"] == 1  # the store too

    # Idempotent: a second run finds nothing and publishes nothing more.
    again = await org_purge.purge_org(pool, GONE, "someone-else@example.com", archive)
    assert (again.completed_at, again.requested_by) == (tombstone.completed_at, "ops@example.com")
    async with pool.acquire() as conn:
        purged = await store.read_stream(conn, org_purge.tombstone_stream(GONE))
    [event] = purged
    message = to_message(event)
    assert (message.action, message.oid) == ("org_purged", GONE)
    assert message.metadata["counts"]["tickets"] == live

    # A detection of the org still in flight is dropped, not turned into a ticket.
    await ingest(pool, [lc(GONE, 99, cat="late")])
    assert await ids_of(pool, GONE) == {str(org_purge.tombstone_stream(GONE))}


async def test_a_purge_that_crashed_halfway_is_finished_by_running_it_again(
    pool: db.Pool, tokens: TokenService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(pool, 6, oid=GONE)
    monkeypatch.setattr(org_purge, "STREAMS_PER_STEP", 2)
    real = org_purge._purge_streams
    calls = 0

    async def crash_on_the_second(conn: db.Connection, oid: str, streams: list[uuid.UUID]) -> int:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionError("the operator's session died")
        return await real(conn, oid, streams)

    monkeypatch.setattr(org_purge, "_purge_streams", crash_on_the_second)
    with pytest.raises(ConnectionError):
        await org_purge.purge_org(pool, GONE, "ops@x", tmp_path)
    assert len(await ids_of(pool, GONE)) == 4  # two of six streams went, the rest wait
    monkeypatch.setattr(org_purge, "_purge_streams", real)
    done = await org_purge.purge_org(pool, GONE, "ops@x", tmp_path)
    assert done.completed_at is not None and await ids_of(pool, GONE) == {
        str(org_purge.tombstone_stream(GONE))
    }


async def test_only_an_operator_purges_through_the_api(pool: db.Pool, tokens: TokenService) -> None:
    await seed(pool, 1, oid=GONE)
    client = await serve(pool, tokens)
    try:
        admin = bearer(tokens.mint("admin@gone", {GONE: ["org.conf.set", "org.conf.get"]}, ttl_s=60))
        r = await client.delete(f"/api/v1/orgs/{GONE}", headers=admin)
        assert r.status == 403
        operator = bearer(tokens.mint("ops@x", {"*": ["org.conf.set"]}, ttl_s=60, operator=True))
        r = await client.delete(f"/api/v1/orgs/{GONE}", headers=operator)
        body = await r.json()
        assert (
            r.status == 200
            and body["oid"] == GONE
            and body["completed_at"]
            and body["requested_by"] == "ops@x"
        )
    finally:
        await client.close()
