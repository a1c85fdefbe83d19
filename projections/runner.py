"""Runs projections over the log and rebuilds them from scratch."""

import asyncio
import contextlib
from typing import Protocol
from uuid import UUID

from services.eventstore import db
from services.eventstore.postgres import RecordedEvent, read_excluding, safe_head
from services.eventstore.subscription import (
    lock_checkpoints,
    process_batch,
    run_subscription,
    save_checkpoint,
)


class Projection(Protocol):
    name: str
    tables: tuple[str, ...]
    # Event types that open a stream and only insert rows keyed by that stream. Nothing another
    # stream's event does can touch those rows, so a rebuild may write all of them first.
    openings: tuple[str, ...]
    # Tables kept by triggers on the others (emptied with them, their keys left for the triggers).
    trigger_tables: tuple[str, ...]

    async def apply(self, conn: db.Connection, events: list[RecordedEvent]) -> None:
        """Write the rows for these events; runs in the transaction that moves the checkpoint."""

    async def load(self, conn: db.Connection, until: int, side: db.Connection | None) -> int:
        """Insert the rows of every opening event up to position `until` into tables that have no
        keys yet (a rebuild's first pass); return how many events that was. `side`, if given, is a
        second connection outside the rebuild's transaction, for work that only reads the log."""

    async def forget(self, conn: db.Connection, ticket_ids: list[UUID]) -> None:
        """Drop the rows of these tickets, whose events left the log (archived), in the caller's
        transaction, under this projection's checkpoint lock (taken by the caller)."""

    async def forget_org(self, conn: db.Connection, oid: str) -> dict[str, int]:
        """Drop every row of an unsubscribed org; how many per table."""


async def run_projections(
    pool: db.Pool, projections: list[Projection], stop: asyncio.Event, database: str = "home"
) -> None:
    async with asyncio.TaskGroup() as tg:
        for p in projections:
            tg.create_task(run_subscription(pool, p.name, p.apply, stop=stop, database=database))


_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, i.indrelid::regclass::text AS "table",
       quote_ident(c.conname) AS "constraint",
       coalesce('ALTER TABLE ' || i.indrelid::regclass::text || ' ADD CONSTRAINT ' || quote_ident(c.conname)
                || ' ' || pg_get_constraintdef(c.oid), pg_get_indexdef(i.indexrelid)) AS definition,
       i.indisunique AS is_key
FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = ANY($1::text[]::regclass[])
"""


async def rebuild(pool: db.Pool, projection: Projection, batch: int = 5000) -> int:
    """Empty the projection's tables and replay the whole log into them; return the events replayed.

    One transaction: readers and the running projector wait (on the table locks and the checkpoint
    row) and then see the complete new model, and a rebuild that fails or is killed leaves the old
    one as it was. Indexes are built once, by a sort, instead of row by row: every index is dropped,
    the opening events (most of a history's rows) are loaded in bulk into tables with no index at
    all, the keys are built, the other events are replayed in log order, and the other indexes are
    built last. Loading the openings first gives the rows of a replay in log order because nothing
    else writes the rows they write (see `Projection.openings`).
    """
    async with pool.acquire() as conn, contextlib.AsyncExitStack() as stack:
        # A second connection lets the first pass use the other core; a pool of one goes without.
        side = await stack.enter_async_context(pool.acquire()) if pool.get_max_size() > 1 else None
        head = await safe_head(conn)  # (what is appended after it, the batches below replay)
        async with conn.transaction():
            shards = len(await lock_checkpoints(conn, projection.name))
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await conn.execute(f"TRUNCATE {', '.join(projection.tables)}")
            written = [t for t in projection.tables if t not in projection.trigger_tables]
            indexes = await conn.fetch(_INDEXES, written)
            for index in indexes:
                if index["constraint"]:
                    await conn.execute(f"ALTER TABLE {index['table']} DROP CONSTRAINT {index['constraint']}")
                else:
                    await conn.execute(f"DROP INDEX {index['name']}")
            replayed = await projection.load(conn, head, side)
            for index in indexes:
                if index["is_key"]:
                    await conn.execute(index["definition"])
            position = 0
            while events := await read_excluding(conn, position, head, batch, projection.openings):
                await projection.apply(conn, events)
                replayed += len(events)
                position = events[-1].position
            for shard in range(shards):
                await save_checkpoint(conn, projection.name, head, shard)
            # Then what was appended meanwhile, in order, as the projector would.
            while n := await process_batch(conn, projection.name, projection.apply, batch):
                replayed += n
            for index in indexes:
                if not index["is_key"]:
                    await conn.execute(index["definition"])
        # Fresh statistics for the planner, and a visibility map so index-only scans skip the heap.
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(projection.tables)}")
    return replayed
