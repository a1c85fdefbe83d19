"""Forward-only SQL migrations, applied in file-name order by the migrate step, each exactly once,
as the schema's owner; the services themselves run as a runtime role that cannot change it."""

from importlib import resources

from services.eventstore import db, locks


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("services.eventstore") / "migrations"
    files = sorted((f.name, f.read_text()) for f in folder.iterdir() if f.name.endswith(".sql"))
    return files


async def migrate(conn: db.Connection, runtime_role: str | None = None) -> list[str]:
    """Apply the migrations this database has not seen and, if a runtime role is named, give it
    what the services need and nothing more; return the names applied."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", locks.MIGRATIONS)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = await _applied(conn)
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
            applied_now.append(name)
        if runtime_role:
            await grant_runtime(conn, runtime_role)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", locks.MIGRATIONS)
    return applied_now


async def grant_runtime(conn: db.Connection, role: str) -> None:
    """The runtime role reads and writes the write model, read tables and queues, and appends to
    the event store; it may not rewrite or delete events, change the schema, disable its triggers
    or record a migration. Archiving and purging go through the owner's functions (0016)."""
    r = _quote_ident(role)
    async with conn.transaction():
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {r}")
        await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}")
        await conn.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {r}")
        await conn.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON events, events_archive FROM {r}")
        await conn.execute(f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM {r}")
        await conn.execute(
            "GRANT EXECUTE ON FUNCTION ticketing_archive_stream(uuid, timestamptz),"
            f" ticketing_purge_stream(uuid), ticketing_purge_org_streams(text, uuid[]) TO {r}"
        )


async def pending(conn: db.Connection) -> list[str]:
    """The migrations this database lacks (all of them before the first migrate)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = await _applied(conn) if exists else set()
    return [name for name, _ in migration_files() if name not in done]


async def _applied(conn: db.Connection) -> set[str]:
    return {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
