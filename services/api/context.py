"""Typed keys of what the application object carries."""

from aiohttp import web

from services.auth.credentials import Revocations
from services.commands.handlers import CommandHandler
from services.delivery.egress import Fence
from services.eventstore import db

POOL = web.AppKey("pool", db.Pool)
# Readiness asks the database on a connection of its own: a pool saturated by requests is busy,
# not down, and must not take every API instance out of its load balancer at once.
PROBE_POOL = web.AppKey("probe_pool", db.Pool)
HANDLER = web.AppKey("handler", CommandHandler)
# Where an org's webhook and integration URLs may point (checked when they are set).
EGRESS = web.AppKey("egress", Fence)
# Revoked tokens, as every API process learns of them (a live stream re-checks its own).
REVOCATIONS = web.AppKey("revocations", Revocations)
