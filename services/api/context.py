"""Typed keys of what the application object carries."""

import asyncpg
from aiohttp import web

from services.commands.handlers import CommandHandler

POOL = web.AppKey("pool", asyncpg.Pool)
# Readiness asks the database on a connection of its own: a pool saturated by requests is busy,
# not down, and must not take every API instance out of its load balancer at once.
PROBE_POOL = web.AppKey("probe_pool", asyncpg.Pool)
HANDLER = web.AppKey("handler", CommandHandler)
