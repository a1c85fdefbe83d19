"""The asyncpg types the code is written against, named once.

With asyncpg-stubs a connection and a pool are generic in their record type, and a connection
taken from a pool is a proxy of one; every function takes either. At run time these are asyncpg's
own classes (so that `web.AppKey` and `cast` keep working)."""

from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
    Pool: TypeAlias = asyncpg.Pool[asyncpg.Record]
else:
    Connection = asyncpg.Connection
    Pool = asyncpg.Pool
