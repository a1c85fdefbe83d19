import asyncio
import os
import random
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from domain.errors import ConcurrencyError
from services.devstack.embedded import Infra
from services.eventstore import db
from services.eventstore import postgres as store
from services.eventstore.migrate import migrate, migration_files
from services.eventstore.subscription import catch_up, checkpoints


def new_event(n: int = 0) -> store.NewEvent:
    return store.NewEvent(uuid.uuid4(), "created", f'{{"n": {n}}}'.encode(), {"actor": "test"})


async def append(pool: db.Pool, stream: uuid.UUID, expected: int, count: int = 1) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, [store.StreamAppend(stream, expected, [new_event(i) for i in range(count)])])


async def test_append_and_read_stream(pool: db.Pool) -> None:
    stream = uuid.uuid4()
    await append(pool, stream, 0, 2)
    await append(pool, stream, 2, 1)
    async with pool.acquire() as conn:
        events = await store.read_stream(conn, stream)
    assert [e.version for e in events] == [1, 2, 3]
    assert [e.data for e in events] == ['{"n": 0}', '{"n": 1}', '{"n": 0}']
    assert all(e.metadata == {"actor": "test"} for e in events)
    assert events[0].position < events[1].position < events[2].position


async def test_stale_expected_version_is_a_concurrency_error(pool: db.Pool) -> None:
    stream = uuid.uuid4()
    await append(pool, stream, 0)
    with pytest.raises(ConcurrencyError):
        await append(pool, stream, 0)
    async with pool.acquire() as conn:
        assert len(await store.read_stream(conn, stream)) == 1


async def test_version_gap_is_refused_by_the_database(pool: db.Pool) -> None:
    stream = uuid.uuid4()
    with pytest.raises(ConcurrencyError):
        await append(pool, stream, 5)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.SerializationError):
            await conn.execute(
                "INSERT INTO events (event_id, stream_id, version, type, data) VALUES ($1, $2, 3, 'x', '{}')",
                uuid.uuid4(),
                stream,
            )


async def test_a_gap_anywhere_in_a_batch_refuses_the_whole_append(pool: db.Pool) -> None:
    """Checked once per statement, after it: versions 1..3 of a new stream in one batch pass, a
    batch with one gapped stream among good ones writes nothing."""
    good, fresh = uuid.uuid4(), uuid.uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append(conn, [store.StreamAppend(good, 0, [new_event() for _ in range(3)])])
        with pytest.raises(ConcurrencyError, match="has no version"):
            async with conn.transaction():
                await store.append(
                    conn,
                    [
                        store.StreamAppend(good, 3, [new_event()]),
                        store.StreamAppend(fresh, 0, [new_event()]),
                        store.StreamAppend(uuid.uuid4(), 1, [new_event()]),  # would be version 2 of nothing
                    ],
                )
        assert [e.version for e in await store.read_stream(conn, good)] == [1, 2, 3]
        assert await store.read_stream(conn, fresh) == []


async def test_append_outside_a_transaction_is_refused(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError):
            await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [new_event()])])


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE events SET type = 'tampered'",
        "DELETE FROM events",
        "TRUNCATE events",
    ],
)
async def test_events_are_append_only(pool: db.Pool, sql: str) -> None:
    await append(pool, uuid.uuid4(), 0)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM events WHERE type = 'created'") == 1


async def test_migrations_apply_once(pool: db.Pool) -> None:
    async with pool.acquire() as conn:
        assert await migrate(conn) == []
        names = [r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")]
    assert names[0] == "0001_event_store.sql"
    assert names == sorted(names)


async def test_concurrent_reader_never_skips_an_event(pool: db.Pool) -> None:
    """Writers commit out of order (random sleeps inside their transactions); a reader
    following `position > last` must still see every committed event exactly once."""
    writers, appends_each = 8, 40
    done = asyncio.Event()
    seen: list[int] = []

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        streams: dict[uuid.UUID, int] = {}
        for _ in range(appends_each):
            stream = rng.choice([*streams, uuid.uuid4()]) if streams else uuid.uuid4()
            version = streams.get(stream, 0)
            count = rng.randint(1, 3)
            async with pool.acquire() as conn, conn.transaction():
                await asyncio.sleep(rng.random() * 0.003)
                await store.append(
                    conn, [store.StreamAppend(stream, version, [new_event() for _ in range(count)])]
                )
                await asyncio.sleep(rng.random() * 0.003)  # commit late, holding a low position
            streams[stream] = version + count

    async def reader() -> None:
        last = 0
        async with pool.acquire() as conn:
            while True:
                finished = done.is_set()
                batch = await store.read_all(conn, last, 50)
                for e in batch:
                    seen.append(e.position)
                    last = e.position
                if finished and not batch:
                    return
                if not batch:
                    await asyncio.sleep(0.001)

    read = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(writers)))
    done.set()
    await read
    async with pool.acquire() as conn:
        committed = [r[0] for r in await conn.fetch("SELECT position FROM events ORDER BY position")]
    assert len(committed) >= writers * appends_each
    assert seen == committed  # every event, once, in order


async def test_a_subscriber_of_some_orgs_handles_each_of_their_events_once_and_moves_past_the_rest(
    pool: db.Pool,
) -> None:
    """A delivery channel reads only the orgs that may have a target, and moves its checkpoint to
    the head past the others: under writers that commit out of order, no event of its orgs is
    skipped or handled twice, small batches included."""
    name, done, handled = f"orgs-only-{uuid.uuid4().hex[:8]}", asyncio.Event(), list[int]()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(30):
            oid = rng.choice(["org-a", "org-b", "org-c"])
            event = store.NewEvent(uuid.uuid4(), "created", b"{}", {"oid": oid})
            async with pool.acquire() as conn, conn.transaction():
                await asyncio.sleep(rng.random() * 0.003)
                await store.append(conn, [store.StreamAppend(uuid.uuid4(), 0, [event])])
                await asyncio.sleep(rng.random() * 0.003)  # commit late, holding a low position

    async def handle(conn: db.Connection, events: list[store.RecordedEvent]) -> None:
        handled.extend(e.position for e in events)

    async def only_a(conn: db.Connection) -> list[str]:
        return ["org-a"]

    async def reader() -> None:
        while not done.is_set():
            await catch_up(pool, name, handle, limit=3, orgs=only_a)
            await asyncio.sleep(0.002)
        await catch_up(pool, name, handle, limit=3, orgs=only_a)

    read = asyncio.create_task(reader())
    await asyncio.gather(*(writer(i) for i in range(6)))
    done.set()
    await read
    async with pool.acquire() as conn:
        committed = [
            r[0]
            for r in await conn.fetch(
                "SELECT position FROM events WHERE metadata->>'oid' = 'org-a' AND position > $1 ORDER BY position",
                0,
            )
        ]
        at, heads = await checkpoints(conn, name), await store.shard_heads(conn)
    assert handled == committed and len(committed) > 10  # each of org-a's, once, in order
    assert at == heads  # past the other orgs' events too, in every shard


async def test_reading_some_streams_reads_only_their_events(pool: db.Pool) -> None:
    """The cost of reading streams must not grow with the store: among 50,000 other events (and
    fresh statistics), reading 2,000 streams from their second version reads their rows only."""
    wanted = [uuid.uuid4() for _ in range(2_000)]
    rows = [(uuid.uuid4(), uuid.uuid4(), 1, "created", "{}", "{}") for _ in range(50_000)]
    rows += [(uuid.uuid4(), s, v, "created", "{}", "{}") for s in wanted for v in (1, 2)]
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.copy_records_to_table(
                "events",
                records=rows,
                columns=("event_id", "stream_id", "version", "type", "data", "metadata"),
            )
        await conn.execute("ANALYZE events")
        async with conn.transaction():
            found = await store.read_streams(conn, {s: 2 for s in wanted})
            read = await conn.fetchval(
                "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'events'"
            )
    assert {s: [e.version for e in found[s]] for s in wanted} == {s: [2] for s in wanted}
    assert read <= 2 * len(wanted), f"{read} rows read for {len(wanted)} events"


async def migrate_check(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "services.cli", "migrate", "--check"]
    return await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True)


async def test_replicas_starting_at_once_migrate_one_after_the_other_and_check_tells_when_behind(
    infra: Infra, tmp_path: Path
) -> None:
    """Three migrate steps on an empty database at the same moment (several replicas of a rolling
    update): each migration is applied once, by one of them; `migrate --check` exits 1 before."""
    name = f"m_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(infra.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = infra.database_url.rpartition("/")[0] + f"/{name}"
    env = {**os.environ, "DATABASE_URL": url, "TICKETING_ENV": "test", "TICKETING_STATE_DIR": str(tmp_path)}
    check = await migrate_check(env)
    assert check.returncode == 1 and "pending: 0001_event_store.sql" in check.stdout
    conns = [await asyncpg.connect(url) for _ in range(3)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        names = [r[0] for r in await conns[0].fetch("SELECT name FROM schema_migrations")]
    finally:
        for c in conns:
            await c.close()
    assert sorted(n for one in applied for n in one) == sorted(names) == [f for f, _ in migration_files()]
    assert sum(1 for one in applied if one) == 1  # one did all the work; the others found it done
    check = await migrate_check(env)
    assert check.returncode == 0 and "current" in check.stdout
