"""Composition root: the one place that builds pools, handlers and apps from Settings."""

import asyncio
import gc
import signal
import urllib.parse
from datetime import UTC, datetime
from functools import partial
from typing import Any

import asyncpg
import msgspec

from services import logs
from services.auth.tokens import TokenService
from services.commands.handlers import Clock, CommandHandler
from services.eventstore import db
from services.eventstore.layout import reshard
from services.eventstore.migrate import migrate, pending
from services.eventstore.placement import Placement, check_data_placed, check_layout
from services.eventstore.postgres import UNAVAILABLE
from services.kafka.topics import ensure_topics
from services.metrics import watch_pool
from services.outages import until_available
from services.settings import Settings


def system_clock() -> datetime:
    return datetime.now(UTC)


async def create_pool(
    settings: Settings,
    *,
    min_size: int = 1,
    max_size: int | None = None,
    server_settings: dict[str, str] | None = None,
    transaction_state_only: bool = False,
    name: str = "main",
) -> db.Pool:
    """A pool on the configured database, once its schema is current: a process started before
    the migrate step finished (a rolling update) waits for it instead of running on a schema it
    does not know. Services never migrate: their role cannot.

    `transaction_state_only`: the pool's users keep no session state (no SET, LISTEN, session
    advisory lock, cursor outside a transaction), so a released connection needs only what asyncpg
    always does (roll back an open transaction), not its `RESET ALL; UNLISTEN *; ...` round trip.
    """
    _, dsn = settings.require_infra()

    async def attempt() -> db.Pool:
        conn = await asyncpg.connect(dsn)
        try:
            behind = await pending(conn)
        finally:
            await conn.close()
        if behind:
            raise SchemaBehind(f"the schema lacks {', '.join(behind)}: run `python -m services.cli migrate`")
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size or settings.db_pool_max,
            server_settings=server_settings,
            reset=_nothing_more if transaction_state_only else None,
        )
        assert pool is not None
        return watch_pool(pool, name)

    # A process that starts before its database (a cluster coming up, a failover) waits for it.
    pool = await until_available(attempt, (*UNAVAILABLE, SchemaBehind), "database")
    assert pool is not None
    return pool


async def create_placement(settings: Settings, *, name: str = "main", **options: Any) -> Placement:
    """A pool on each database of the placement (the home one first); `options` as create_pool's."""
    home, *others = settings.databases()
    pools = {home: await create_pool(settings, name=name, **options)}
    try:
        for i, url in enumerate(others, start=1):
            placed = msgspec.structs.replace(settings, database_url=url)
            pools[url] = await create_pool(placed, name=f"{name}-{i}", **options)
        placement = Placement(pools[home], [pools[url] for url in settings.shard_databases()])
        await check_layout(placement)
    except BaseException:
        for pool in pools.values():
            await pool.close()
        raise
    return placement


def _shown(dsn: str) -> str:
    """A database URL without its password, for a message."""
    parts = urllib.parse.urlsplit(dsn)
    host = parts.hostname or ""
    return f"{parts.scheme}://{parts.username + '@' if parts.username else ''}{host}{parts.path}"


class SchemaBehind(Exception):
    """The database's schema is older than this code: waited out like an outage."""


async def _nothing_more(conn: db.Connection) -> None:
    return None


def make_handler(clock: Clock = system_clock) -> CommandHandler:
    return CommandHandler(clock)


def token_service(settings: Settings) -> TokenService:
    return TokenService(
        settings.require_secret(),
        max_ttl_s=settings.token_max_ttl_s,
        previous_secrets=settings.jwt_previous_secrets,
    )


async def prepare(settings: Settings) -> list[str]:
    """The migrate step: apply the migrations as the schema's owner, grant the runtime role its
    rights, give the log TICKETING_LOG_SHARDS shards, create the topics; safe to repeat, and to run
    from several replicas at once (the migrations take an advisory lock). Returns the migrations
    applied now."""
    owner = settings.as_owner()
    owner.require_infra()

    every, shards = owner.databases(), owner.shard_databases()

    async def attempt(dsn: str) -> list[str]:
        conn = await asyncpg.connect(dsn)
        try:
            applied = await migrate(conn, settings.db_runtime_role)
            if len(every) > 1:  # a placement: this database's events must be where it is looked for
                held = {s for s, url in enumerate(shards) if url == dsn}
                await check_data_placed(conn, held, owner.log_shards, _shown(dsn))
            await reshard(conn, settings.log_shards)  # (nothing to do when the count is already so)
            return applied
        finally:
            await conn.close()

    applied: list[str] = []
    for dsn in every:  # each database of the placement has the whole schema
        applied += await until_available(partial(attempt, dsn), UNAVAILABLE, "database") or []
    await ensure_topics(settings)
    return list(dict.fromkeys(applied))


async def schema_pending(settings: Settings) -> list[str]:
    """`migrate --check`: the migrations the database lacks (it asks the database only)."""
    owner = settings.as_owner()
    if not owner.database_url:
        raise RuntimeError("DATABASE_URL must be set")
    behind: list[str] = []
    for dsn in owner.databases():
        conn = await asyncpg.connect(dsn)
        try:
            behind += await pending(conn)
        finally:
            await conn.close()
    return list(dict.fromkeys(behind))


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT or SIGTERM: a process finishes what it holds, then returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def configure_logging(settings: Settings, process: str) -> None:
    logs.configure(settings.log_level, process, json_lines(settings))


def json_lines(settings: Settings) -> bool | None:
    return {"json": True, "text": False}.get(settings.log_format)  # auto: None, by the terminal


def collect_cycles_less_often() -> None:
    """Every message, event and row allocates short-lived objects; at CPython's default threshold
    the cycle collector took ~15% of the ingest worker (docs/benchmarks.md)."""
    gc.set_threshold(50_000, 20, 100)
