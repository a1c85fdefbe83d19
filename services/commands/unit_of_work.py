"""A unit of work: one transaction, tried again from a fresh read when a concurrent writer got
there first, and the advisory locks that queue writers of one thing behind each other."""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from uuid import UUID

from domain.errors import ConcurrencyError
from services.eventstore import db, locks

log = logging.getLogger(__name__)
T = TypeVar("T")


async def retrying(
    pool: db.Pool,
    work: Callable[[db.Connection], Awaitable[T]],
    attempts: int = 10,
    retry_on: tuple[type[BaseException], ...] = (ConcurrencyError,),
    pause_s: float = 0.002,
) -> T:
    """Run `work` in a transaction, again from a fresh read when a concurrent writer got there first."""
    for attempt in range(1, attempts + 1):
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await work(conn)
        except retry_on as exc:
            if attempt == attempts:
                raise
            log.info("transaction conflicted (%s), attempt %d; retrying", exc, attempt)
            await asyncio.sleep(pause_s * attempt)
    raise AssertionError("unreachable")


async def advisory_locks(conn: db.Connection, keys: Sequence[str], space: int) -> None:
    """Transaction-scoped locks on every key, taken in sorted order (so writers never deadlock),
    in one round trip."""
    if keys:
        await conn.execute(
            "SELECT count(pg_advisory_xact_lock(hashtextextended(k, $2)))"
            " FROM (SELECT k FROM unnest($1::text[]) AS u(k) ORDER BY k) AS ordered",
            list(set(keys)),  # the statement orders them
            space,
        )


async def lock_tickets(conn: db.Connection, ticket_ids: Sequence[UUID]) -> None:
    """Queue writers of the same tickets behind each other for the transaction.

    Optimistic concurrency alone stays correct, but fifty analysts' clicks on one ticket would
    retry each other into the ground; the version check in the database remains the guarantee.
    """
    await advisory_locks(conn, [str(t) for t in ticket_ids], locks.TICKETS)


async def lock_groups(conn: db.Connection, keys: Sequence[tuple[str, str]]) -> None:
    """One writer per (org, group key) at a time, so that two workers, or a worker and the
    re-delivery of its own batch, can never open two tickets for one group window."""
    await advisory_locks(conn, [f"{oid}\x1f{key}" for oid, key in keys], locks.GROUPS)
