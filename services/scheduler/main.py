"""The scheduler process: SLA breaches, auto-close and retention on time
(`python -m services.cli scheduler`)."""

from services.bootstrap import create_pool, make_handler, stop_on_signals
from services.evidence import open_store
from services.metrics import serve_metrics
from services.scheduler.deadlines import run_scheduler
from services.settings import Settings


async def serve(settings: Settings) -> None:
    serve_metrics(settings, "scheduler")
    pool, store = await create_pool(settings), open_store(settings)
    try:
        await run_scheduler(pool, make_handler(), stop_on_signals(), settings.archive_dir, evidence=store)
    finally:
        await store.close()
        await pool.close()
