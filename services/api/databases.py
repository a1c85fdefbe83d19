"""Which database answers a request: its org's (domain.placement), or each of its orgs' for a
multi-org route whose orgs are placed on more than one database (it fans out and merges).

The home database answers what belongs to no org (tokens, API keys, sessions: `POOL`)."""

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiohttp import web

from services.api.auth import REQUEST_ORGS
from services.eventstore import db
from services.eventstore.placement import Placement, at_once, on_pool

T = TypeVar("T")

PLACEMENT = web.AppKey("placement", Placement)


class SpansDatabases(Exception):
    """A multi-org request whose orgs are on several databases reached a handler that reads one:
    a bug (that route must fan out), never a client's doing."""


def pool_of(request: web.Request) -> db.Pool:
    """The one database holding every org the request was authorized for."""
    placement = request.app[PLACEMENT]
    if len(placement.pools) == 1:
        return placement.home
    groups = placement.orgs_by_pool(request.get(REQUEST_ORGS) or [])
    if not groups:
        return placement.home
    if len(groups) > 1:
        raise SpansDatabases(f"{request.method} {request.path} reads one database, its orgs are on several")
    return groups[0][0]


def spans_databases(request: web.Request, oids: list[str]) -> bool:
    return len(request.app[PLACEMENT].orgs_by_pool(oids)) > 1


async def each_database(
    request: web.Request, oids: list[str], work: Callable[[db.Connection, list[str]], Awaitable[T]]
) -> list[T]:
    """`work(conn, its_orgs)` on each database holding some of the orgs, at once."""

    def share(there: list[str]) -> Callable[[db.Connection], Awaitable[T]]:
        return lambda conn: work(conn, there)

    return await at_once(
        on_pool(pool, share(there)) for pool, there in request.app[PLACEMENT].orgs_by_pool(oids)
    )


def merged(parts: Sequence[Sequence[T]], key: Callable[[T], Any], *, reverse: bool = False) -> list[T]:
    """Each database's rows as one list in the query's order (`key`, as each database sorted its
    own); the rows of a single database stay as it gave them."""
    rows = [row for part in parts for row in part]
    if len(parts) > 1:
        rows.sort(key=key, reverse=reverse)
    return rows
