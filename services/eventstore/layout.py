"""The log's layout: how many shards new appends are spread over, and changing it.

A reshard takes the layout lock exclusively, so appends wait (each holds it shared from before its
first row to its commit) while reads go on; it waits until every subscriber has handled every
event in every shard, starts each subscriber's checkpoint in every shard of the new layout at the
head, and commits the new count. Events keep the shard they were appended to: only appends after
it use the new one. Because every reader had handled everything before it, a ticket whose org moved
to another shard is still read in order.
"""

import asyncio
import logging
import time

from domain.limits import LOG_SHARDS_MAX
from services.eventstore import db, locks
from services.eventstore.postgres import head_position, shard_count

log = logging.getLogger(__name__)

_BEHIND = (
    "SELECT c.name, c.shard, c.position FROM subscription_checkpoints c"
    " JOIN log_shard_heads h ON h.shard = c.shard WHERE c.position < h.head ORDER BY c.name, c.shard"
)


class SubscribersBehind(RuntimeError):
    """A reshard that waited too long for the subscribers: nothing changed."""


async def reshard(conn: db.Connection, shards: int, wait_s: float = 300.0) -> int:
    """Spread new appends over `shards` shards; the count before. Waits (appends paused) until every
    subscriber has reached the head, at most `wait_s` (then SubscribersBehind, and nothing changed:
    start the processes that are behind, or stop the ones that are gone for good)."""
    if not 1 <= shards <= LOG_SHARDS_MAX:
        raise ValueError(f"the log has 1 to {LOG_SHARDS_MAX} shards (got {shards})")
    if await shard_count(conn) == shards:  # (the usual case: no lock taken, nothing waits)
        return shards
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", locks.LOG_LAYOUT)
        before = await shard_count(conn)
        if before == shards:
            return before
        head = await head_position(conn)  # no append under way: every event up to it is in
        deadline = time.monotonic() + wait_s
        while behind := await conn.fetch(_BEHIND):
            if time.monotonic() > deadline:
                names = sorted({f"{r['name']} (shard {r['shard']} at {r['position']})" for r in behind})
                raise SubscribersBehind(f"subscribers behind the head {head}: {', '.join(names)}")
            await asyncio.sleep(0.2)
        await conn.execute(
            "INSERT INTO subscription_checkpoints (name, shard, position)"
            " SELECT DISTINCT c.name, s, $2::bigint"
            " FROM subscription_checkpoints c, generate_series(0, $1 - 1) s ON CONFLICT (name, shard)"
            " DO UPDATE SET position = greatest(subscription_checkpoints.position, EXCLUDED.position),"
            " updated_at = now()",
            shards,
            head,
        )
        await conn.execute("UPDATE log_layout SET shards = $1, changed_at = now()", shards)
    log.info("the log was resharded from %d to %d shards at position %d", before, shards, head)
    return before
