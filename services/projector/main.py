"""The projector process (`python -m services.cli projector`) and the offline rebuild."""

from projections.registry import all_projections
from projections.runner import rebuild as rebuild_one
from projections.runner import run_projections
from services.bootstrap import create_pool, stop_on_signals
from services.metrics import serve_metrics
from services.settings import Settings


async def serve(settings: Settings) -> None:
    serve_metrics(settings, "projector")
    pool = await create_pool(settings)
    try:
        await run_projections(pool, all_projections(), stop_on_signals())
    finally:
        await pool.close()


async def rebuild(settings: Settings) -> None:
    """An operator's command: it drops and rebuilds indexes, which only the schema's owner may."""
    pool = await create_pool(settings.as_owner())
    try:
        for projection in all_projections():
            n = await rebuild_one(pool, projection)
            print(f"{projection.name}: replayed {n} events")
    finally:
        await pool.close()
