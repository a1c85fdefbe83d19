"""The project's command line: `python -m services.cli COMMAND` (also installed as `ticketing`)."""

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from services.bootstrap import collect_cycles_less_often, configure_logging
from services.settings import Settings


async def publish_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.devstack.publish import publish, read_jsonl
    from services.devstack.samples import generate

    if not settings.kafka_bootstrap_servers:
        raise SystemExit("publish needs KAFKA_BOOTSTRAP_SERVERS (make run prints it)")
    oid = args.oid or settings.default_oid or "00000000-0000-0000-0000-000000000001"
    if args.file:
        detections = read_jsonl(Path(args.file))
    else:
        detections = list(generate(oid, args.samples, seed=args.seed))
    n = await publish(settings, detections, oid)
    print(f"published {n} detections to {settings.topics.detections}")


def token_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.bootstrap import token_service
    from services.settings import parse_ttl

    perms = args.perm or ["investigation.get"]
    try:
        token = token_service(settings).mint(
            args.sub, {oid: perms for oid in args.oid}, ttl_s=parse_ttl(args.ttl), operator=args.operator
        )
    except ValueError as exc:
        raise SystemExit(f"token: {exc}") from None
    if settings.database_url:  # recorded, so that the org's admin can list and revoke it
        asyncio.run(_record_token(settings, token))
    else:
        print("note: DATABASE_URL is not set: the token is not recorded (not listed; revocable by jti)",
              file=sys.stderr)  # fmt: skip
    print(token)


@contextlib.asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Any]:
    """One connection for a command that only needs the database."""
    import asyncpg

    if not settings.database_url:
        raise SystemExit("DATABASE_URL must be set")
    conn = await asyncpg.connect(settings.database_url)
    try:
        yield conn
    finally:
        await conn.close()


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M}" if moment else "never"


async def _record_token(settings: Settings, token: str) -> None:
    from services.auth import credentials

    async with _database(settings) as conn:
        await credentials.record(conn, token, "cli")


async def token_admin_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.auth import credentials

    async with _database(settings) as conn:
        if args.token_command == "list":
            for t in await credentials.list_tokens(conn, args.oid):
                state = f"revoked {_when(t.revoked_at)}" if t.revoked_at else f"expires {_when(t.expires_at)}"
                print(f"{t.jti}  {t.subject}  {','.join(t.orgs)}  last used {_when(t.last_used_at)}  {state}")
        elif not await credentials.revoke(conn, args.jti, "cli"):
            raise SystemExit(f"token revoke: no live recorded token {args.jti}")


async def api_key_cmd(settings: Settings, args: argparse.Namespace) -> None:
    from services.auth import api_keys

    async with _database(settings) as conn:
        if args.key_command == "create":
            try:
                print(await api_keys.create(conn, args.oid, args.name, args.perm or [api_keys.TRACK], "cli"))
            except ValueError as exc:
                raise SystemExit(f"token key create: {exc}") from None
        elif args.key_command == "list":
            for k in await api_keys.list_keys(conn, args.oid):
                state = f"revoked {_when(k.revoked_at)}" if k.revoked_at else "active"
                used = _when(k.last_used_at)
                print(f"{k.key_id}  {k.name}  {','.join(k.permissions)}  last used {used}  {state}")
        elif not await api_keys.revoke(conn, args.key_id):
            raise SystemExit(f"token key revoke: no active key {args.key_id}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ticketing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="dev stack: embedded broker + database and every service (make run)")
    sub.add_parser("api", help="the HTTP API")
    sub.add_parser("ingest", help="the faust ingest worker (detections -> tickets)")
    sub.add_parser("relay", help="the publication path: event store -> ticket-events topic and webhooks")
    sub.add_parser("projector", help="the read-model projector")
    sub.add_parser("scheduler", help="SLA breaches and auto-close, on time")
    mig = sub.add_parser("migrate", help="apply database migrations (as the schema owner) and create topics")
    mig.add_argument("--check", action="store_true", help="only tell whether the database is behind (exit 1)")
    sub.add_parser("rebuild", help="rebuild every read table from the event store")
    purge = sub.add_parser("purge-org", help="unsubscribe an org: delete all its ticket data (idempotent)")
    purge.add_argument("--oid", required=True)
    purge.add_argument("--by", required=True, help="who asks (recorded in the tombstone)")
    resub = sub.add_parser("resubscribe-org", help="take a purged org in again (only data after its purge)")
    resub.add_argument("--oid", required=True)
    resub.add_argument("--by", required=True, help="who asks (recorded in the tombstone)")
    pub = sub.add_parser("publish", help="publish detections to the detections topic")
    source = pub.add_mutually_exclusive_group(required=True)
    source.add_argument("--file", help="JSON-lines file, one detection per line")
    source.add_argument("--samples", type=int, help="generate this many sample detections")
    pub.add_argument("--oid", help="org of generated samples (and of ExtraHop lines without one)")
    pub.add_argument("--seed", type=int, default=0)
    tok = sub.add_parser("token", help="API tokens").add_subparsers(dest="token_command", required=True)
    create = tok.add_parser("create", help="mint a token signed with TICKETING_JWT_SECRET")
    create.add_argument("--sub", required=True, help="subject: the analyst's email or a service name")
    create.add_argument(
        "--oid", action="append", required=True, help="org id (repeat for several; '*' = all)"
    )
    create.add_argument("--perm", action="append", help="permission (repeat); default investigation.get")
    create.add_argument("--ttl", default="8h", help="lifetime: 900s, 15m, 8h, 30d (default 8h)")
    create.add_argument("--operator", action="store_true", help="operator token (may use the '*' org)")
    tok_list = tok.add_parser("list", help="the recorded tokens that grant an org: subject, expiry, last use")
    tok_list.add_argument("--oid", required=True)
    tok_revoke = tok.add_parser("revoke", help="revoke a token by its jti (every API process within seconds)")
    tok_revoke.add_argument("--jti", required=True)
    keys = tok.add_parser("key", help="org API keys for integrations").add_subparsers(
        dest="key_command", required=True
    )
    key_create = keys.add_parser("create", help="a new key for one org (printed once; stored hashed)")
    key_create.add_argument("--oid", required=True)
    key_create.add_argument(
        "--name", required=True, help="what uses it, e.g. extrahop-prod (the events' `by`)"
    )
    key_create.add_argument("--perm", action="append", help="permission (repeat); default ticket.track")
    key_list = keys.add_parser("list", help="the org's keys: name, permissions, created, last used, revoked")
    key_list.add_argument("--oid", required=True)
    key_revoke = keys.add_parser("revoke", help="revoke a key by its id (effective within seconds)")
    key_revoke.add_argument("--key-id", required=True)
    args = parser.parse_args(argv)
    collect_cycles_less_often()

    if args.command == "ingest":
        from services.ingest.app import main as ingest_main

        ingest_main()
        return 0
    if args.command == "run":
        from services.devstack.supervisor import run_devstack

        return run_devstack()
    settings = Settings.from_env()
    configure_logging(settings, args.command)
    if args.command == "token" and args.token_command == "create":
        token_cmd(settings, args)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_command(args.command, settings, args))
    return 0


async def _command(name: str, settings: Settings, args: argparse.Namespace) -> None:
    """Each process's entry point lives in its own sub-package; imported here only when chosen."""
    if name == "api":
        from services.api.main import serve as serve_api

        await serve_api(settings)
    elif name == "relay":
        from services.outbound.main import serve as serve_outbound

        await serve_outbound(settings)
    elif name == "projector":
        from services.projector.main import serve as serve_projector

        await serve_projector(settings)
    elif name == "scheduler":
        from services.scheduler.main import serve as serve_scheduler

        await serve_scheduler(settings)
    elif name == "migrate":
        from services.bootstrap import prepare, schema_pending

        if args.check:
            behind = await schema_pending(settings)
            print("\n".join(f"pending: {m}" for m in behind) or "the schema is current")
            if behind:
                raise SystemExit(1)
        else:
            applied = await prepare(settings)
            print("\n".join(f"applied: {m}" for m in applied) or "the schema was current")
    elif name == "rebuild":
        from services.projector.main import rebuild

        await rebuild(settings)
    elif name in ("purge-org", "resubscribe-org"):
        import msgspec

        from services.bootstrap import create_placement
        from services.commands.org_purge import purge_org, resubscribe_org
        from services.evidence import open_store

        placement, store = await create_placement(settings), open_store(settings)
        pool = placement.pool_of(args.oid)  # the org's database; its credentials are on the home one
        try:
            if name == "purge-org":
                tombstone = await purge_org(
                    pool, args.oid, args.by, settings.archive_dir, evidence=store, credentials=placement.home
                )
            else:
                tombstone = await resubscribe_org(pool, args.oid, args.by)
        finally:
            await store.close()
            await placement.close()
        print(msgspec.json.encode(tombstone).decode())
    elif name == "publish":
        await publish_cmd(settings, args)
    elif name == "token" and args.token_command in ("list", "revoke"):
        await token_admin_cmd(settings, args)
    elif name == "token":
        await api_key_cmd(settings, args)


if __name__ == "__main__":
    sys.exit(main())
