"""The scheduler process: SLA breaches, auto-close and retention on time
(`python -m services.cli scheduler`)."""

import asyncio

from services.bootstrap import create_placement, make_handler, stop_on_signals
from services.evidence import open_store
from services.metrics import serve_metrics
from services.scheduler.deadlines import run_scheduler
from services.settings import Settings


async def serve(settings: Settings) -> None:
    """One scheduler per database of the placement, each leading on its own database."""
    serve_metrics(settings, "scheduler")
    placement, store = await create_placement(settings), open_store(settings)
    stop, handler = stop_on_signals(), make_handler()
    try:
        async with asyncio.TaskGroup() as tg:
            for pool in placement.pools:
                tg.create_task(run_scheduler(pool, handler, stop, settings.archive_dir, evidence=store))
    finally:
        await store.close()
        await placement.close()
