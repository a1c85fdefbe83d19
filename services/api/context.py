"""Typed keys of what the application object carries."""

import asyncpg
from aiohttp import web

POOL = web.AppKey("pool", asyncpg.Pool)
