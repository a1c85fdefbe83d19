"""The API process: `python -m services.cli api`."""

import logging

from aiohttp import web

from services.api.app import create_app
from services.bootstrap import create_pool, make_handler, rate_limiter, stop_on_signals, token_service
from services.settings import Settings

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    tokens = token_service(settings)  # fail fast, before anything starts, without a secret
    # A request waits at most this long for a lock (a projection rebuild holds the read tables for
    # its whole transaction): then it gets a 503 with Retry-After instead of hanging.
    pool = await create_pool(settings, server_settings={"lock_timeout": "5s"}, transaction_state_only=True)
    app = create_app(pool, make_handler(), tokens, rate_limiter(settings))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port)
    await site.start()
    log.info("API listening on http://%s:%d", settings.api_host, settings.api_port)
    try:
        await stop_on_signals().wait()
    finally:
        await runner.cleanup()
        await pool.close()
