"""The API process: `python -m services.cli api`."""

import logging

from aiohttp import web

from services.api.app import create_app
from services.api.bounded_pool import bounded
from services.api.ratelimit import RateLimiter
from services.bootstrap import create_placement, create_pool, make_handler, stop_on_signals, token_service
from services.delivery.egress import fence_of
from services.eventstore import db
from services.eventstore.placement import Placement
from services.evidence import open_store
from services.settings import Settings

log = logging.getLogger(__name__)


async def open_pools(settings: Settings) -> tuple[Placement, db.Pool]:
    """The requests' pools (one per database of the placement) and readiness's own
    one-connection pool on the home database: a database of some orgs being down makes their
    requests 503, not every org's API instance unready.

    A request waits at most 5 s for a lock (a projection rebuild holds the read tables for its
    whole transaction) and runs at most the statement timeout: then it is a 503 with Retry-After
    instead of a connection held for as long as one tenant's query takes."""
    requests = await create_placement(
        settings,
        server_settings={"lock_timeout": "5s", "statement_timeout": f"{settings.api_statement_timeout_ms}ms"},
        transaction_state_only=True,
    )
    probe = await create_pool(
        settings, min_size=1, max_size=1, server_settings={"statement_timeout": "2s"}, name="probe"
    )
    return requests.mapped(lambda p: bounded(p, settings.db_acquire_timeout_s)), probe


async def serve(settings: Settings) -> None:
    tokens = token_service(settings)  # fail fast, before anything starts, without a secret
    placement, probe = await open_pools(settings)
    app = create_app(
        placement.home,
        make_handler(),
        tokens,
        RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst),
        probe_pool=probe,
        egress=fence_of(settings),
        archive_dir=settings.archive_dir,
        evidence=open_store(settings),
        ticket_url_template=settings.ticket_url_template,
        streams_per_principal=settings.streams_per_principal,
        oidc=settings.oidc,
        placement=placement,
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port)
    await site.start()
    log.info("API listening on http://%s:%d", settings.api_host, settings.api_port)
    try:
        await stop_on_signals().wait()
    finally:
        await runner.cleanup()
        await probe.close()
        await placement.close()
