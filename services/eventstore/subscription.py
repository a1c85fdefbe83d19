"""Catch-up readers of the log (projections, the relay): batch, handle, checkpoint, repeat.

A reader follows each shard of the log with a checkpoint of its own (a ticket's events are all in
its org's shard, so per-ticket order holds). Each batch reads and handles one shard's events and
moves that checkpoint in one transaction, holding the checkpoint row locked: two instances of one
subscriber never handle the same batch at once, and a crash leaves the checkpoint where the last
committed batch put it.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from services import metrics
from services.eventstore import db
from services.eventstore.postgres import (
    UNAVAILABLE,
    RecordedEvent,
    read_all,
    read_of_orgs,
    shard_count,
)
from services.outages import until_available

log = logging.getLogger(__name__)

BatchHandler = Callable[[db.Connection, list[RecordedEvent]], Awaitable[None]]
# The orgs whose events a subscriber handles, asked in each batch's transaction (None: every event)
OrgFilter = Callable[[db.Connection], Awaitable[Sequence[str]]]
NOTIFY_CHANNEL = "events_appended"
CHECKPOINT_CHANNEL = "checkpoint_moved"  # payload: the subscriber's name, sent when its batch commits


async def lock_checkpoint(conn: db.Connection, name: str, shard: int = 0) -> int:
    await conn.execute(
        "INSERT INTO subscription_checkpoints (name, shard) VALUES ($1, $2)"
        " ON CONFLICT (name, shard) DO NOTHING",
        name,
        shard,
    )
    position: int = await conn.fetchval(
        "SELECT position FROM subscription_checkpoints WHERE name = $1 AND shard = $2 FOR UPDATE", name, shard
    )
    return position


async def lock_checkpoints(conn: db.Connection, name: str) -> list[int]:
    """Every shard's checkpoint of the subscriber, locked in shard order (its batches lock one at a
    time): whoever holds them all has the subscriber to itself until its transaction ends."""
    return [await lock_checkpoint(conn, name, shard) for shard in range(await shard_count(conn))]


async def save_checkpoint(conn: db.Connection, name: str, position: int, shard: int = 0) -> None:
    """Moved in the caller's transaction; who follows a subscriber (the live stream follows the
    tickets projection) is told when it commits."""
    await conn.execute(
        "WITH moved AS (UPDATE subscription_checkpoints SET position = $2, updated_at = now()"
        " WHERE name = $1 AND shard = $3 RETURNING name)"
        " SELECT pg_notify('" + CHECKPOINT_CHANNEL + "', name) FROM moved",
        name,
        position,
        shard,
    )


async def checkpoint(conn: db.Connection, name: str, shard: int = 0) -> int:
    position = await conn.fetchval(
        "SELECT position FROM subscription_checkpoints WHERE name = $1 AND shard = $2", name, shard
    )
    return int(position or 0)


# Each shard of the current layout: the subscriber's checkpoint in it (0 where it has none yet)
# and its head, in one statement, so that a wake finds the shards with something new without a
# transaction per shard (a follower's wakes are mostly for other shards, or for nothing: idle polls).
_SHARDS = (
    "SELECT h.shard, coalesce(c.position, 0), h.head FROM log_shard_heads h"
    " LEFT JOIN subscription_checkpoints c ON c.name = $1 AND c.shard = h.shard ORDER BY h.shard"
)


async def checkpoints(conn: db.Connection, name: str) -> list[int]:
    """The subscriber's position in each shard of the current layout."""
    return [r[1] for r in await conn.fetch(_SHARDS, name)]


async def process_batch(
    conn: db.Connection,
    name: str,
    handle: BatchHandler,
    limit: int,
    orgs: OrgFilter | None = None,
    database: str = "home",
) -> int:
    """A batch of each shard that has something new; how many events were handled. (What is read
    before the batch's transaction only chooses the shards: each batch reads its shard from its
    checkpoint, locked.)"""
    handled, behind, newest = 0, 0, 0
    for shard, at, head in await conn.fetch(_SHARDS, name):
        if head > at:
            if orgs is None:
                n, at = await _process(conn, name, shard, handle, limit)
            else:
                n, at = await _process_orgs(conn, name, shard, handle, limit, orgs, head)
            handled += n
        behind, newest = max(behind, head - at), max(newest, head)
    if newest:
        metrics.LOG_HEAD.labels(database).set(newest)
    metrics.BEHIND.labels(name, database).set(behind)
    return handled


async def _process(
    conn: db.Connection, name: str, shard: int, handle: BatchHandler, limit: int
) -> tuple[int, int]:
    """(events handled, where the checkpoint is now)."""
    async with conn.transaction():
        position = await lock_checkpoint(conn, name, shard)
        events = await read_all(conn, position, limit, shard)
        if events:
            await handle(conn, events)
            await save_checkpoint(conn, name, events[-1].position, shard)
    return len(events), events[-1].position if events else position


async def _process_orgs(
    conn: db.Connection, name: str, shard: int, handle: BatchHandler, limit: int, orgs: OrgFilter, head: int
) -> tuple[int, int]:
    """A batch of only the orgs' events up to the shard's head, the checkpoint moved past the
    others too. The head is safe to move to: an append holds its shard's lock until it commits, so
    once a position of the shard is visible every lower one has committed (or never will)."""
    async with conn.transaction():
        position = await lock_checkpoint(conn, name, shard)
        oids = await orgs(conn) if head > position else []
        events = await read_of_orgs(conn, shard, position, head, limit, oids) if oids else []
        until = events[-1].position if len(events) == limit else head
        if until > position:
            if events:
                await handle(conn, events)
            await save_checkpoint(conn, name, until, shard)
    return len(events), max(until, position)


async def catch_up(
    pool: db.Pool,
    name: str,
    handle: BatchHandler,
    limit: int = 2000,
    orgs: OrgFilter | None = None,
    database: str = "home",
) -> int:
    """Handle everything committed so far; return the number of events handled. (`database`: its
    name in the metrics, with orgs placed on several.)"""
    total = 0
    async with pool.acquire() as conn:
        while n := await process_batch(conn, name, handle, limit, orgs, database):
            total += n
    return total


async def run_subscription(
    pool: db.Pool,
    name: str,
    handle: BatchHandler,
    *,
    stop: asyncio.Event,
    limit: int = 2000,
    idle_poll_s: float = 1.0,
    retry_on: tuple[type[Exception], ...] = (),
    orgs: OrgFilter | None = None,
    database: str = "home",
) -> None:
    """Follow the log until `stop` is set: woken by NOTIFY, polling as a fallback. While the
    database (or what `retry_on` names, e.g. the broker a handler writes to) is away, the batch
    rolls back, its checkpoint stays, and the same batch is tried again until it goes through."""
    await until_available(
        lambda: _follow(pool, name, handle, stop, limit, idle_poll_s, orgs, database),
        (*UNAVAILABLE, *retry_on),
        name,
        stop,
    )


async def _follow(
    pool: db.Pool,
    name: str,
    handle: BatchHandler,
    stop: asyncio.Event,
    limit: int,
    idle_poll_s: float,
    orgs: OrgFilter | None,
    database: str,
) -> None:
    wake = asyncio.Event()
    listener = await pool.acquire()

    def on_notify(*_: object) -> None:
        wake.set()

    try:
        await listener.add_listener(NOTIFY_CHANNEL, on_notify)
        while not stop.is_set():
            wake.clear()
            handled = await catch_up(pool, name, handle, limit, orgs, database)
            if handled:
                log.debug("%s handled %d events", name, handled)
                continue
            if listener.is_closed():  # its NOTIFYs are gone: listen again on a live connection
                raise asyncpg.InterfaceError("the listening connection was closed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_first(wake, stop), idle_poll_s)
    finally:
        with contextlib.suppress(Exception):
            await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
        with contextlib.suppress(Exception):
            await pool.release(listener)


async def _first(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
