"""Retention: archive, remove from the live tables and store, read back, reports unchanged."""

import asyncio
import gzip
import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest

from domain.commands import TicketChanges, UpdateTicket
from domain.detections import Detection
from projections import reports
from projections.registry import all_projections
from services.archive.files import FORMAT
from services.auth.tokens import TokenService
from services.commands.configs import load_configs, update_config
from services.commands.envelope import CommandContext
from services.commands.handlers import CommandHandler, execute_one
from services.eventstore import db
from services.eventstore.subscription import catch_up
from services.ingest.pipeline import RawRecord, ingest_batch
from services.scheduler.deadlines import run_scheduler
from services.scheduler.retention import due, purge_archives, run_retention
from tests.conftest import bearer, counts_drift
from tests.integration.support import NewTicket, Sink, open_tickets, serve

T0 = datetime(2026, 1, 10, tzinfo=UTC)
ORG = "ret-org"
ANALYST = CommandContext(actor="analyst@example.com")


class Clock:
    now = T0

    def __call__(self) -> datetime:
        return self.now


async def setup(pool: db.Pool, handler: CommandHandler, clock: Clock) -> list[uuid.UUID]:
    async with pool.acquire() as conn, conn.transaction():
        await update_config(
            conn, ORG, {"retention_days": 30, "auto_close_resolved_after_days": 0}, ANALYST, T0
        )
    ids = [uuid.uuid4() for _ in range(3)]
    new = []
    for i, tid in enumerate(ids):
        d = Detection(
            detection_id=f"det-{i}", oid=ORG, detection_cat="c", detection_source="s", detection_priority=5,
            sensor_id="s", hostname="h", detected_at=T0, source_format="limacharlie",
        )  # fmt: skip
        new.append(NewTicket(tid, ORG, "high", d, ANALYST))
    async with pool.acquire() as conn, conn.transaction():
        await open_tickets(conn, handler, new)
    clock.now = T0 + timedelta(minutes=10)
    for tid in ids[:2]:
        await execute_one(pool, handler, UpdateTicket(tid, TicketChanges(status="acknowledged")), ANALYST)
        await execute_one(pool, handler, UpdateTicket(tid, TicketChanges(status="in_progress")), ANALYST)
    clock.now = T0 + timedelta(hours=1)
    await execute_one(
        pool,
        handler,
        UpdateTicket(ids[0], TicketChanges(status="resolved", classification="true_positive")),
        ANALYST,
    )
    await execute_one(pool, handler, UpdateTicket(ids[0], TicketChanges(status="closed")), ANALYST)
    await execute_one(pool, handler, UpdateTicket(ids[1], TicketChanges(status="resolved")), ANALYST)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    return ids


async def report(pool: db.Pool) -> dict[str, Any]:
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG])
        period = (T0 - timedelta(days=1), T0 + timedelta(days=1), "severity")
        rows = await reports.summary_rows(conn, configs, *period, T0 + timedelta(days=40))  # type: ignore[arg-type]
        r = reports.summary_of(configs, *period, [rows])  # type: ignore[arg-type]
    built: dict[str, Any] = msgspec.to_builtins(r)
    return built


async def test_archive_remove_read_back_and_report_unchanged(
    pool: db.Pool, tokens: TokenService, tmp_path: Path
) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    closed, resolved, still_open = await setup(pool, handler, clock)
    before = await report(pool)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG])
    assert await run_retention(pool, configs, tmp_path, T0 + timedelta(days=29)) == 0  # not old enough
    async with pool.acquire() as conn:  # a subscriber that has not seen these events blocks the move
        await conn.execute(  # (in every shard of the log)
            "INSERT INTO subscription_checkpoints (name, shard, position)"
            " SELECT 'slow-reader', s, 0 FROM generate_series(0, (SELECT shards FROM log_layout) - 1) AS s"
        )
    assert await run_retention(pool, configs, tmp_path, T0 + timedelta(days=31)) == 0
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM subscription_checkpoints WHERE name = 'slow-reader'")
    assert await run_retention(pool, configs, tmp_path, T0 + timedelta(days=31)) == 2

    async with pool.acquire() as conn:
        live = {r[0] for r in await conn.fetch("SELECT DISTINCT stream_id FROM events")}
        moved = await conn.fetch("SELECT stream_id, count(*) FROM events_archive GROUP BY 1")
        in_tables = {r[0] for r in await conn.fetch("SELECT ticket_id FROM tickets")}
        logged = await conn.fetch(
            "SELECT ticket_id, events, archived_by FROM archive_log ORDER BY ticket_number"
        )
    assert closed not in live and resolved not in live and still_open in live
    assert {r[0]: r[1] for r in moved} == {closed: 9, resolved: 6}
    assert in_tables == {still_open}
    async with pool.acquire() as conn:
        assert not await counts_drift(conn)
        assert await conn.fetchval("SELECT sum(n) FROM ticket_counts") == 1
    assert [(r[0], r[1], r[2]) for r in logged] == [(closed, 9, "system"), (resolved, 6, "system")]
    doc = json.loads(gzip.decompress((tmp_path / ORG / f"{closed}.json.gz").read_bytes()))
    assert (
        doc["format"] == FORMAT
        and doc["ticket"]["status"] == "closed"
        and doc["ticket"]["ticket_number"] == 1
    )
    assert [e["type"] for e in doc["events"]] == [
        "created", "status_changed", "acknowledged", "status_changed", "status_changed", "resolved",
        "classified", "status_changed", "closed",
    ]  # fmt: skip
    assert [e["version"] for e in doc["events"]] == list(range(1, 10))
    assert doc["detections"][0]["detection_id"] == "det-0"
    assert await report(pool) == before  # archived tickets still count

    client = await serve(pool, tokens)
    try:
        token = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
        listing = await (await client.get(f"/api/v1/archive?oids={ORG}", headers=token)).json()
        assert sorted(t["ticket_number"] for t in listing["tickets"]) == [1, 2]
        r = await client.get(f"/api/v1/archive/1?oid={ORG}", headers=token)
        assert r.status == 200 and (await r.json())["events"] == doc["events"]
        assert (await client.get(f"/api/v1/archive/3?oid={ORG}", headers=token)).status == 404
        assert (await client.get(f"/api/v1/tickets/1?oid={ORG}", headers=token)).status == 404
    finally:
        await client.close()

    # A re-delivered detection of an archived ticket still creates nothing.
    record = RawRecord(
        "d", 0, 1, None, json.dumps({"detect_id": "det-0", "cat": "c", "routing": {"oid": ORG}}).encode()
    )
    result = await ingest_batch(pool, handler, [record], Sink(), default_oid=None)
    assert (result.tickets_created, result.duplicates) == (0, 1)


async def test_the_guard_lets_only_the_named_stream_go(pool: db.Pool, tmp_path: Path) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    closed, _, still_open = await setup(pool, handler, clock)
    async with pool.acquire() as conn:
        for sql in (
            "DELETE FROM events",
            "UPDATE events SET type = 'x'",
            f"DELETE FROM events WHERE stream_id = '{still_open}'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with conn.transaction():
                    await conn.execute("SELECT set_config('ticketing.archive_stream', $1, true)", str(closed))
                    await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", closed) == 9
        configs = await load_configs(conn, [ORG])
    assert await run_retention(pool, configs, tmp_path, T0 + timedelta(days=31)) == 2
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events_archive") == 15
        for sql in (
            "DELETE FROM events_archive",
            "UPDATE events_archive SET type = 'x'",
            "TRUNCATE events_archive",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM events_archive") == 15


async def test_archives_are_purged_after_two_years_and_the_log_keeps_the_record(
    pool: db.Pool, tokens: TokenService, tmp_path: Path
) -> None:
    """The seed: "Archived data is retained for 2 years in long-term storage"."""
    clock = Clock()
    handler = CommandHandler(clock)
    closed, resolved, still_open = await setup(pool, handler, clock)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG])
    archived_at = T0 + timedelta(days=31)
    assert await run_retention(pool, configs, tmp_path, archived_at) == 2
    files = sorted((tmp_path / ORG).iterdir())
    assert len(files) == 2
    assert await purge_archives(pool, archived_at + timedelta(days=729)) == 0
    async with pool.acquire() as conn:  # the guard: the purge's path names its stream, nothing else
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('ticketing.purge_stream', $1, true)", str(closed))
                await conn.execute("DELETE FROM events_archive WHERE stream_id = $1", resolved)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("SELECT set_config('ticketing.purge_stream', $1, true)", str(still_open))
                await conn.execute("DELETE FROM events WHERE stream_id = $1", still_open)
    purge_day = archived_at + timedelta(days=731)
    await run_retention(pool, configs, tmp_path, purge_day)  # the scheduler's pass purges too
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM events_archive") == 0
        assert await conn.fetchval("SELECT count(*) FROM archived_tickets") == 0
        log = await conn.fetch("SELECT ticket_id, purged_at FROM archive_log ORDER BY ticket_number")
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = $1", still_open) > 0
    assert [(r[0], r[1]) for r in log] == [(closed, purge_day), (resolved, purge_day)]
    assert not any(f.exists() for f in files)
    assert await purge_archives(pool, purge_day + timedelta(days=1)) == 0  # once
    client = await serve(pool, tokens)
    try:
        token = bearer(tokens.mint("a@x", {ORG: ["investigation.get"]}, ttl_s=600))
        gone = await client.get(f"/api/v1/archive/1?oid={ORG}", headers=token)
        assert gone.status == 410 and "purged" in (await gone.json())["error"]
        listing = await (await client.get(f"/api/v1/archive?oids={ORG}", headers=token)).json()
        assert listing["tickets"] == []
    finally:
        await client.close()


async def test_a_backlog_goes_a_batch_per_pass_the_longest_settled_first(
    pool: db.Pool, tmp_path: Path
) -> None:
    """Passes are capped so the scheduler's ticks go on between them; a full pass is followed by
    the next one at once rather than a retention interval later."""
    clock = Clock()
    handler = CommandHandler(clock)
    async with pool.acquire() as conn, conn.transaction():
        await update_config(
            conn, ORG, {"retention_days": 30, "auto_close_resolved_after_days": 0}, ANALYST, T0
        )
    ids = [uuid.uuid4() for _ in range(5)]
    detections = [
        Detection(
            detection_id=f"det-{i}", oid=ORG, detection_cat="c", detection_source="s", detection_priority=5,
            sensor_id="s", hostname="h", detected_at=T0, source_format="limacharlie",
        )
        for i in range(5)
    ]  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await open_tickets(
            conn,
            handler,
            [NewTicket(t, ORG, "high", d, ANALYST) for t, d in zip(ids, detections, strict=True)],
        )
    for hour, i in enumerate((3, 1, 4, 0, 2), start=1):  # settled in this order
        clock.now = T0 + timedelta(hours=hour)
        for status in ("acknowledged", "in_progress", "resolved"):
            await execute_one(pool, handler, UpdateTicket(ids[i], TicketChanges(status=status)), ANALYST)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    clock.now = T0 + timedelta(days=31)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [ORG])
        assert await due(conn, configs, clock.now, limit=2) == [ids[3], ids[1]]

    stop = asyncio.Event()
    scheduler = asyncio.create_task(
        run_scheduler(pool, handler, stop, tmp_path, every_s=0.05, retention_every_s=3600, retention_batch=2)
    )
    try:
        for _ in range(600):  # 30 s; at one pass a retention interval it would take two hours
            if await pool.fetchval("SELECT count(*) FROM archive_log") == 5:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await scheduler
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM archive_log") == 5
        assert await conn.fetchval("SELECT count(*) FROM tickets WHERE oid = $1", ORG) == 0
        assert not await counts_drift(conn)


async def test_a_failing_pass_neither_stops_the_clocks_nor_repeats_every_tick(
    pool: db.Pool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    handler = CommandHandler(clock)
    closed, resolved, still_open = await setup(pool, handler, clock)
    clock.now = T0 + timedelta(days=31)  # two tickets due for the archive, one SLA clock run out
    not_a_folder = tmp_path / "archive"
    not_a_folder.write_text("")  # every archive write fails
    stop = asyncio.Event()
    scheduler = asyncio.create_task(
        run_scheduler(pool, handler, stop, not_a_folder, every_s=0.05, retention_every_s=3600)
    )
    breach = "SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'sla_breached'"
    try:
        for _ in range(600):
            if await pool.fetchval(breach, still_open):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # ten more ticks
    finally:
        stop.set()
        await scheduler
    assert await pool.fetchval(breach, still_open) == 2  # never acknowledged, never resolved
    complaints = [
        r for r in caplog.records if r.name == "services.scheduler.deadlines" and r.levelno >= logging.WARNING
    ]
    assert len(complaints) == 1 and "retention: pass failed" in complaints[0].getMessage()
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM tickets WHERE ticket_id = ANY($1::uuid[])", [closed, resolved]
        )
        == 2
    )


async def test_an_org_id_that_is_a_path_archives_inside_the_folder(pool: db.Pool, tmp_path: Path) -> None:
    """The org id comes from the detection: `../../x` used to put the archive two folders up."""
    hostile = "../../escaped"
    clock = Clock()
    handler = CommandHandler(clock)
    async with pool.acquire() as conn, conn.transaction():
        await update_config(
            conn, hostile, {"retention_days": 30, "auto_close_resolved_after_days": 0}, ANALYST, T0
        )
    tid = uuid.uuid4()
    d = Detection(
        detection_id="det-x", oid=hostile, detection_cat="c", detection_source="s", detection_priority=5,
        sensor_id="s", hostname="h", detected_at=T0, source_format="limacharlie",
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await open_tickets(conn, handler, [NewTicket(tid, hostile, "high", d, ANALYST)])
    await execute_one(pool, handler, UpdateTicket(tid, TicketChanges(status="closed")), ANALYST)
    for p in all_projections():
        await catch_up(pool, p.name, p.apply)
    async with pool.acquire() as conn:
        configs = await load_configs(conn, [hostile])
    folder = tmp_path / "a" / "b" / "archive"
    assert await run_retention(pool, configs, folder, T0 + timedelta(days=31)) == 1
    files = await asyncio.to_thread(lambda: list(tmp_path.rglob("*.json.gz")))
    assert len(files) == 1 and files[0].resolve().is_relative_to(folder.resolve())
    assert not await asyncio.to_thread((tmp_path / "a" / "escaped").exists)
