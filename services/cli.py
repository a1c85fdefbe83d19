"""The project's command line: `python -m services.cli COMMAND` (also installed as `ticketing`)."""

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from pathlib import Path

from services.settings import Settings

log = logging.getLogger("ticketing")


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("TICKETING_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _collect_cycles_less_often() -> None:
    """Every message, event and row allocates short-lived objects. At CPython's default threshold
    (a collection per 700 net allocations) the cycle collector ran ~2,700 times per 100,000
    detections and took ~15% of the ingest worker's CPU, ~3 s of a 1M-event rebuild. Cycles are
    still collected, in fewer and larger steps (measured in BENCHMARKS.md)."""
    gc.set_threshold(50_000, 20, 100)


async def prepare(settings: Settings) -> None:
    """Migrate the schema and create the topics; every service start is safe to repeat this."""
    from services.bootstrap import create_pool
    from services.topics import ensure_topics

    pool = await create_pool(settings, max_size=1)
    await pool.close()
    await ensure_topics(settings)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_api(settings: Settings) -> None:
    from aiohttp import web

    from services.api.app import create_app
    from services.bootstrap import create_pool, make_handler, rate_limiter, token_service

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
        await _stop_event().wait()
    finally:
        await runner.cleanup()
        await pool.close()


async def serve_relay(settings: Settings) -> None:
    """The publication path: the ticket-events topic and the orgs' webhooks, each from its own
    checkpoint."""
    from services.bootstrap import create_pool
    from services.relay import run_relay
    from services.topics import ensure_topics
    from services.webhooks import run_webhooks

    await ensure_topics(settings)
    pool = await create_pool(settings, max_size=6)
    stop = _stop_event()
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_relay(settings, pool, stop))
            tg.create_task(run_webhooks(pool, stop))
    finally:
        await pool.close()


async def serve_projector(settings: Settings) -> None:
    from projections.registry import all_projections
    from projections.runner import run_projections
    from services.bootstrap import create_pool

    pool = await create_pool(settings, max_size=4)
    try:
        await run_projections(pool, all_projections(), _stop_event())
    finally:
        await pool.close()


async def serve_scheduler(settings: Settings) -> None:
    from services.bootstrap import create_pool, make_handler
    from services.scheduler import run_scheduler

    pool = await create_pool(settings, max_size=4)
    try:
        await run_scheduler(pool, make_handler(), _stop_event(), settings.archive_dir)
    finally:
        await pool.close()


async def rebuild(settings: Settings) -> None:
    from projections.registry import all_projections
    from projections.runner import rebuild as rebuild_one
    from services.bootstrap import create_pool

    pool = await create_pool(settings)
    try:
        for projection in all_projections():
            n = await rebuild_one(pool, projection)
            print(f"{projection.name}: replayed {n} events")
    finally:
        await pool.close()


async def publish_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.publish import publish, read_jsonl
    from services.samples import generate

    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit("publish needs KAFKA_BOOTSTRAP_SERVERS (make run prints it)")
    oid = args.oid or settings.default_oid or "00000000-0000-0000-0000-000000000001"
    if args.file:
        detections = read_jsonl(Path(args.file))
    else:
        detections = list(generate(oid, args.samples, seed=args.seed))
    n = await publish(bootstrap, settings.topics.detections, detections, oid)
    print(f"published {n} detections to {settings.topics.detections}")


def token_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.bootstrap import token_service
    from services.tokens import parse_ttl

    perms = args.perm or ["investigation.get"]
    try:
        token = token_service(settings).mint(
            args.sub, {oid: perms for oid in args.oid}, ttl_s=parse_ttl(args.ttl), operator=args.operator
        )
    except ValueError as exc:
        raise SystemExit(f"token: {exc}") from None
    print(token)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="dev stack: embedded broker + database and every service (make run)")
    sub.add_parser("api", help="the HTTP API")
    sub.add_parser("ingest", help="the faust ingest worker (detections -> tickets)")
    sub.add_parser("relay", help="the publication path: event store -> ticket-events topic and webhooks")
    sub.add_parser("projector", help="the read-model projector")
    sub.add_parser("scheduler", help="SLA breaches and auto-close, on time")
    sub.add_parser("migrate", help="apply database migrations and create topics")
    sub.add_parser("rebuild", help="rebuild every read table from the event store")
    pub = sub.add_parser("publish", help="publish detections to the detections topic")
    source = pub.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="JSON-lines file, one detection per line")
    source.add_argument("--samples", type=int, help="generate this many sample detections")
    pub.add_argument("--oid", help="org of generated samples (and of ExtraHop lines without one)")
    pub.add_argument("--seed", type=int, default=0)
    bench = sub.add_parser("bench", help="every benchmark in one run (make bench)")
    bench.add_argument("--quick", action="store_true", help="the scaled-down run (under 2 minutes)")
    bench.add_argument("--out", default="bench-results.json", help="where to write the JSON results")
    soak = sub.add_parser("soak", help="every service at a steady rate for a long while (make soak)")
    soak.add_argument("--minutes", type=float, default=30.0)
    soak.add_argument("--rate", type=int, default=500, help="detections per second")
    soak.add_argument("--interval", type=float, default=60.0, help="seconds between report lines")
    soak.add_argument("--out", default="soak-results.json", help="where to write the JSON results")
    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = tok.add_parser("create", help="mint a token signed with TICKETING_JWT_SECRET")
    create.add_argument("--sub", required=True, help="subject: the analyst's email or a service name")
    create.add_argument(
        "--oid", action="append", required=True, help="org id (repeat for several; '*' = all)"
    )
    create.add_argument("--perm", action="append", help="permission (repeat); default investigation.get")
    create.add_argument("--ttl", default="8h", help="lifetime: 900s, 15m, 8h, 30d (default 8h)")
    create.add_argument("--operator", action="store_true", help="operator token (may use the '*' org)")
    args = parser.parse_args(argv)
    _collect_cycles_less_often()

    if args.command == "ingest":
        from services.ingest.app import main as ingest_main

        ingest_main()
        return 0
    if args.command == "run":
        from services.supervisor import run_devstack

        return run_devstack()
    _logging()
    settings = Settings.from_env()
    if args.command == "bench":
        import tempfile

        from services.bench.runner import bench as run_bench

        logging.getLogger().setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="ticketing-bench-") as state:
            asyncio.run(run_bench(args.quick, Path(args.out), Path(state)))
        return 0
    if args.command == "soak":
        import tempfile

        if args.minutes <= 0 or args.rate <= 0 or args.interval <= 0:
            parser.error("soak: --minutes, --rate and --interval must be positive")

        from services.bench.soak import run as run_soak
        from services.bench.soak import verdict

        logging.getLogger().setLevel(logging.WARNING)
        with tempfile.TemporaryDirectory(prefix="ticketing-soak-") as state:
            report = asyncio.run(run_soak(args.minutes, args.rate, args.interval, Path(state)))
        return 0 if verdict(report, Path(args.out)) else 1
    if args.command == "token":
        token_cmd(settings, args)
        return 0
    commands = {
        "api": lambda: serve_api(settings),
        "relay": lambda: serve_relay(settings),
        "projector": lambda: serve_projector(settings),
        "scheduler": lambda: serve_scheduler(settings),
        "migrate": lambda: prepare(settings),
        "rebuild": lambda: rebuild(settings),
        "publish": lambda: publish_cmd(settings, args),
    }
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(commands[args.command]())
    return 0


if __name__ == "__main__":
    sys.exit(main())
