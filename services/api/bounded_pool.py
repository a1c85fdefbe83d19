"""The API's view of its connection pool: a request waits a bounded time for a connection.

asyncpg waits for a free connection for ever by default, so one tenant's burst of slow requests
would queue every other tenant's behind it with no answer; bounded, the ones that cannot get a
connection in time are a 503 with Retry-After (the pool's TimeoutError is an OSError, which the
error middleware already treats as "unavailable")."""

from typing import Any, cast

from services.eventstore import db


class BoundedPool:
    def __init__(self, pool: db.Pool, acquire_timeout_s: float) -> None:
        self._pool = pool
        self._acquire_timeout_s = acquire_timeout_s

    def acquire(self, *, timeout: float | None = None) -> Any:
        return self._pool.acquire(timeout=self._acquire_timeout_s if timeout is None else timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def bounded(pool: db.Pool, acquire_timeout_s: float) -> db.Pool:
    """The pool, as the handlers see it (they take an db.Pool)."""
    return cast(db.Pool, BoundedPool(pool, acquire_timeout_s))
