"""Runs projections over the global log and rebuilds them from scratch."""

import asyncio
from typing import Protocol

import asyncpg

from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import catch_up, lock_checkpoint, run_subscription, save_checkpoint


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]

    async def apply(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        """Write the rows for these events; runs in the transaction that moves the checkpoint."""


async def run_projections(pool: asyncpg.Pool, projections: list[Projection], stop: asyncio.Event) -> None:
    async with asyncio.TaskGroup() as tg:
        for p in projections:
            tg.create_task(run_subscription(pool, p.name, p.apply, stop=stop))


async def rebuild(pool: asyncpg.Pool, projection: Projection, batch: int = 5000) -> int:
    """Empty the projection's tables and replay the whole log into them; return the events replayed.

    Emptying and resetting the checkpoint happen under the checkpoint's row lock, so a running
    projector waits and then continues from zero instead of writing into half-emptied tables.
    """
    async with pool.acquire() as conn, conn.transaction():
        await lock_checkpoint(conn, projection.name)
        await conn.execute(f"TRUNCATE {', '.join(projection.tables)}")
        await save_checkpoint(conn, projection.name, 0)
    replayed = await catch_up(pool, projection.name, projection.apply, limit=batch)
    async with pool.acquire() as conn:
        # Fresh statistics for the planner, and a visibility map so index-only scans skip the heap.
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(projection.tables)}")
    return replayed
