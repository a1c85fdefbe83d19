"""Composition root: the one place that builds pools, handlers and apps from Settings."""

from datetime import UTC, datetime

import asyncpg

from services.api.ratelimit import RateLimiter
from services.eventstore.migrate import migrate
from services.handlers import Clock, CommandHandler
from services.settings import Settings
from services.tokens import TokenService


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


async def _nothing_more(conn: asyncpg.Connection) -> None:
    return None


def make_handler(clock: Clock = system_clock) -> CommandHandler:
    return CommandHandler(clock)


def token_service(settings: Settings) -> TokenService:
    return TokenService(settings.require_secret())


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
