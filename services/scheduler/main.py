"""The scheduler process: SLA breaches, auto-close and retention on time
(`python -m services.cli scheduler`)."""

from services.bootstrap import create_pool, make_handler, stop_on_signals
from services.evidence.store import LocalStore
from services.metrics import serve_metrics
from services.scheduler.deadlines import run_scheduler
from services.settings import Settings


async def serve(settings: Settings) -> None:
    serve_metrics(settings, "scheduler")
    pool = await create_pool(settings)
    try:
        await run_scheduler(
            pool,
            make_handler(),
            stop_on_signals(),
            settings.archive_dir,
            evidence=LocalStore(settings.evidence_dir),
        )
    finally:
        await pool.close()
