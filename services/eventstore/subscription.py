"""Catch-up readers of the global log (projections, the relay): batch, handle, checkpoint, repeat.

Each batch reads and handles events and moves the checkpoint in one transaction, holding the
checkpoint row locked: two instances of one subscriber never handle the same batch at once, and
a crash leaves the checkpoint where the last committed batch put it.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from services import metrics
from services.eventstore import db
from services.eventstore.postgres import UNAVAILABLE, RecordedEvent, head_position, read_all, read_of_orgs
from services.outages import until_available

log = logging.getLogger(__name__)

BatchHandler = Callable[[db.Connection, list[RecordedEvent]], Awaitable[None]]
# The orgs whose events a subscriber handles, asked in each batch's transaction (None: every event)
OrgFilter = Callable[[db.Connection], Awaitable[Sequence[str]]]
NOTIFY_CHANNEL = "events_appended"
CHECKPOINT_CHANNEL = "checkpoint_moved"  # payload: the subscriber's name, sent when its batch commits


async def lock_checkpoint(conn: db.Connection, name: str) -> int:
    await conn.execute(
        "INSERT INTO subscription_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", name
    )
    position: int = await conn.fetchval(
        "SELECT position FROM subscription_checkpoints WHERE name = $1 FOR UPDATE", name
    )
    return position


async def save_checkpoint(conn: db.Connection, name: str, position: int) -> None:
    """Moved in the caller's transaction; who follows a subscriber (the live stream follows the
    tickets projection) is told when it commits."""
    await conn.execute(
        "WITH moved AS (UPDATE subscription_checkpoints SET position = $2, updated_at = now()"
        " WHERE name = $1 RETURNING name) SELECT pg_notify('" + CHECKPOINT_CHANNEL + "', name) FROM moved",
        name,
        position,
    )


async def checkpoint(conn: db.Connection, name: str) -> int:
    position = await conn.fetchval("SELECT position FROM subscription_checkpoints WHERE name = $1", name)
    return int(position or 0)


async def process_batch(
    conn: db.Connection, name: str, handle: BatchHandler, limit: int, orgs: OrgFilter | None = None
) -> int:
    if orgs is not None:
        return await _process_orgs(conn, name, handle, limit, orgs)
    async with conn.transaction():
        position = await lock_checkpoint(conn, name)
        events = await read_all(conn, position, limit)
        if not events:
            metrics.BEHIND.labels(name).set(0)
            return 0
        await handle(conn, events)
        await save_checkpoint(conn, name, events[-1].position)
    head = await head_position(conn)
    metrics.LOG_HEAD.set(head)
    metrics.BEHIND.labels(name).set(max(0, head - events[-1].position))
    return len(events)


async def _process_orgs(
    conn: db.Connection, name: str, handle: BatchHandler, limit: int, orgs: OrgFilter
) -> int:
    """A batch of only the orgs' events up to the head, the checkpoint moved past the others too.
    The head read first is safe to move to: an append holds the lock until it commits, so once a
    position is visible every lower one has committed (or never will)."""
    async with conn.transaction():
        position = await lock_checkpoint(conn, name)
        head = await head_position(conn)
        oids = await orgs(conn) if head > position else []
        events = await read_of_orgs(conn, position, head, limit, oids) if oids else []
        until = events[-1].position if len(events) == limit else head
        if until > position:
            if events:
                await handle(conn, events)
            await save_checkpoint(conn, name, until)
    metrics.LOG_HEAD.set(head)
    metrics.BEHIND.labels(name).set(max(0, head - until))
    return len(events)


async def catch_up(
    pool: db.Pool, name: str, handle: BatchHandler, limit: int = 2000, orgs: OrgFilter | None = None
) -> int:
    """Handle everything committed so far; return the number of events handled."""
    total = 0
    async with pool.acquire() as conn:
        while n := await process_batch(conn, name, handle, limit, orgs):
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
) -> None:
    """Follow the log until `stop` is set: woken by NOTIFY, polling as a fallback. While the
    database (or what `retry_on` names, e.g. the broker a handler writes to) is away, the batch
    rolls back, its checkpoint stays, and the same batch is tried again until it goes through."""
    await until_available(
        lambda: _follow(pool, name, handle, stop, limit, idle_poll_s, orgs),
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
) -> None:
    wake = asyncio.Event()
    listener = await pool.acquire()

    def on_notify(*_: object) -> None:
        wake.set()

    try:
        await listener.add_listener(NOTIFY_CHANNEL, on_notify)
        while not stop.is_set():
            wake.clear()
            handled = await catch_up(pool, name, handle, limit, orgs)
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
