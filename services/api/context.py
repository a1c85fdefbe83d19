"""Typed keys of what the application object carries."""

import asyncpg
from aiohttp import web

from services.commands.handlers import CommandHandler

POOL = web.AppKey("pool", asyncpg.Pool)
HANDLER = web.AppKey("handler", CommandHandler)
