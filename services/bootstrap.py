"""Composition root: the one place that builds pools, handlers and apps from Settings."""

import asyncio
import gc
import logging
import signal
from datetime import UTC, datetime

import asyncpg

from services.api.ratelimit import RateLimiter
from services.auth.tokens import TokenService
from services.commands.handlers import Clock, CommandHandler
from services.eventstore.migrate import migrate
from services.eventstore.postgres import UNAVAILABLE
from services.kafka.topics import ensure_topics
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
) -> asyncpg.Pool:
    """A pool on the configured database, with the schema migrated forward first.

    `transaction_state_only`: the pool's users keep no session state (no SET, LISTEN, session
    advisory lock, cursor outside a transaction), so a released connection needs only what asyncpg
    always does (roll back an open transaction), not its `RESET ALL; UNLISTEN *; ...` round trip.
    """
    _, dsn = settings.require_infra()

    async def attempt() -> asyncpg.Pool:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size or settings.db_pool_max,
            server_settings=server_settings,
            reset=_nothing_more if transaction_state_only else None,
        )
        assert pool is not None
        return pool

    # A process that starts before its database (a cluster coming up, a failover) waits for it.
    pool = await until_available(attempt, UNAVAILABLE, "database")
    assert pool is not None
    return pool


async def _nothing_more(conn: asyncpg.Connection) -> None:
    return None


def make_handler(clock: Clock = system_clock) -> CommandHandler:
    return CommandHandler(clock)


def token_service(settings: Settings) -> TokenService:
    return TokenService(settings.require_secret(), max_ttl_s=settings.token_max_ttl_s)


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)


async def prepare(settings: Settings) -> None:
    """Migrate the schema and create the topics; every service start is safe to repeat this."""
    pool = await create_pool(settings, max_size=1)
    await pool.close()
    await ensure_topics(settings)


def stop_on_signals() -> asyncio.Event:
    """Set on SIGINT or SIGTERM: a process finishes what it holds, then returns."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def collect_cycles_less_often() -> None:
    """Every message, event and row allocates short-lived objects; at CPython's default threshold
    the cycle collector took ~15% of the ingest worker (docs/benchmarks.md)."""
    gc.set_threshold(50_000, 20, 100)
