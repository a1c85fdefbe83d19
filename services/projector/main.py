"""The projector process (`python -m services.cli projector`) and the offline rebuild."""

import asyncio

from projections.registry import all_projections
from projections.runner import rebuild as rebuild_one
from projections.runner import run_projections
from services.bootstrap import create_placement, stop_on_signals
from services.metrics import serve_metrics
from services.settings import Settings


async def serve(settings: Settings) -> None:
    """Each database of the placement projects its own log into its own read tables."""
    serve_metrics(settings, "projector")
    placement = await create_placement(settings)
    stop = stop_on_signals()
    try:
        async with asyncio.TaskGroup() as tg:
            for pool in placement.pools:
                tg.create_task(run_projections(pool, all_projections(), stop, placement.name_of(pool)))
    finally:
        await placement.close()


async def rebuild(settings: Settings) -> None:
    """An operator's command, on every database: it drops and rebuilds indexes, which only the
    schema's owner may."""
    placement = await create_placement(settings.as_owner())
    try:
        for pool in placement.pools:
            for projection in all_projections():
                n = await rebuild_one(pool, projection)
                where = f" ({placement.name_of(pool)})" if len(placement.pools) > 1 else ""
                print(f"{projection.name}{where}: replayed {n} events")
    finally:
        await placement.close()
