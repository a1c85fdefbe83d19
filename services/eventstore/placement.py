"""The databases of a deployment and which one holds each org (domain.placement's rule).

Every database has the whole schema and the same shard count; each holds the streams, read tables
and dedup state of the orgs whose shard it is given, so an org's writes stay one transaction on one
database. The home database (DATABASE_URL) also holds what is nobody's org: tokens, API keys,
sessions. With no placement, the home database holds every shard (one pool, as before).
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from domain.placement import shard_of
from services.eventstore import db
from services.eventstore.postgres import shard_count, shard_heads

T = TypeVar("T")


class LayoutMismatch(Exception):
    """A placed database's shard count is not the settings': an org would be read in one shard
    and written in another. `migrate` gives every database the settings' count."""


class Placement:
    def __init__(self, home: db.Pool, by_shard: Sequence[db.Pool]) -> None:
        self.home = home
        self.by_shard = tuple(by_shard) or (home,)
        self.pools: tuple[db.Pool, ...] = tuple(dict.fromkeys((home, *self.by_shard)))
        # a database's name in messages: "home", or "shard N" after the first shard it holds
        self.names = {id(p): f"shard {s}" for s, p in reversed(list(enumerate(self.by_shard)))}
        self.names[id(home)] = "home"

    @classmethod
    def single(cls, pool: db.Pool) -> "Placement":
        return cls(pool, (pool,))

    def mapped(self, view: Callable[[db.Pool], db.Pool]) -> "Placement":
        """The same placement with each pool seen through `view` (one view per pool)."""
        seen = {id(p): view(p) for p in self.pools}
        return Placement(seen[id(self.home)], [seen[id(p)] for p in self.by_shard])

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

    @property
    def shards(self) -> int:
        return len(self.by_shard)

    def pool_of(self, oid: str) -> db.Pool:
        return self.by_shard[shard_of(oid, self.shards)]

    def name_of(self, pool: db.Pool) -> str:
        return self.names.get(id(pool), "home")

    def split(self, items: Iterable[T], oid_of: Callable[[T], str]) -> list[tuple[db.Pool, list[T]]]:
        """The items per database, in their order within each; databases in placement order."""
        if len(self.pools) == 1:
            return [(self.home, list(items))]
        groups: dict[db.Pool, list[T]] = {}
        for item in items:
            groups.setdefault(self.pool_of(oid_of(item)), []).append(item)
        return [(p, groups[p]) for p in self.pools if p in groups]

    def orgs_by_pool(self, oids: Iterable[str]) -> list[tuple[db.Pool, list[str]]]:
        return self.split(oids, lambda o: o)


class PlacementRefused(RuntimeError):
    """`migrate` would leave events where the placement does not look for them."""


async def check_data_placed(conn: db.Connection, held: set[int], shards: int, name: str) -> None:
    """Before `migrate` (re)shards a database of a placement: its events must all be in shards the
    placement gives it, and the shard count may change only while it has no events. Moving a
    shard's data between databases is not built: changing N, or the placement of a shard that has
    events, would make those orgs' tickets vanish from where the services look for them."""
    heads = await shard_heads(conn)
    if not any(heads):
        return
    if len(heads) != shards:
        raise PlacementRefused(
            f"database {name} holds events in {len(heads)} shards: with a placement, TICKETING_LOG_SHARDS"
            f" ({shards}) cannot change once there are events (it would move orgs between databases)"
        )
    stray = [s for s, head in enumerate(heads) if head and s not in held]
    if stray:
        raise PlacementRefused(
            f"database {name} holds events of shards {stray}, which TICKETING_PLACEMENT puts on another"
            " database: moving a shard's data is not built"
        )


async def check_layout(placement: Placement) -> None:
    """Every database of a placement must count the shards as the settings do."""
    if len(placement.pools) == 1:
        return
    for pool in placement.pools:
        async with pool.acquire() as conn:
            count = await shard_count(conn)
        if count != placement.shards:
            raise LayoutMismatch(
                f"database {placement.name_of(pool)} has {count} log shards, the settings"
                f" {placement.shards}: run `python -m services.cli migrate`"
            )


async def at_once(works: Iterable[Awaitable[T]]) -> list[T]:
    """Each database's share of a piece of work, at once, results in order. The first failure is
    raised as itself (callers tell an outage from a fault by its type) once the others stopped;
    one share is simply awaited."""
    pending = list(works)
    if len(pending) == 1:
        return [await pending[0]]
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_awaited(w)) for w in pending]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]


async def _awaited(work: Awaitable[T]) -> T:
    return await work


async def on_pool(pool: db.Pool, work: Callable[[db.Connection], Awaitable[T]]) -> T:
    """`work` on a connection of `pool`: a database's share for `at_once`."""
    async with pool.acquire() as conn:
        return await work(conn)
