import asyncio
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from services.devstack.embedded import EmbeddedBroker, EmbeddedPostgres, Infra, infrastructure


async def _db_value(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


def test_session_infrastructure_answers(infra: Infra) -> None:
    assert asyncio.run(_db_value(infra.database_url, "SELECT 1")) == 1
    assert isinstance(asyncio.run(_topics(infra.bootstrap_servers)), list)
    if infra.embedded_database:
        assert infra.database_url.startswith("postgresql://postgres@127.0.0.1:")


def test_given_addresses_start_nothing(tmp_path: Path) -> None:
    with infrastructure(tmp_path, bootstrap_servers="kafka:9092", database_url="postgresql://db/x") as infra:
        assert infra == Infra("kafka:9092", "postgresql://db/x", broker=None, postgres=None)
    assert not any(tmp_path.iterdir())


def test_postgres_keeps_its_data_across_restarts_and_stops_cleanly(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True)
    pg.start()
    try:
        asyncio.run(_db_value(pg.database_url, "CREATE TABLE kept (x int)"))
    finally:
        pg.stop()
    pg2 = EmbeddedPostgres(tmp_path / "pg", fast_unsafe=True)
    pg2.start()
    try:
        assert asyncio.run(_db_value(pg2.database_url, "SELECT count(*) FROM kept")) == 0
    finally:
        pg2.stop()
    assert pg2._proc is None


def test_broker_listens_on_loopback_and_stops(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path / "b")
    broker.start()
    try:
        assert broker.bootstrap_servers.startswith("127.0.0.1:")
        assert asyncio.run(_topics(broker.bootstrap_servers)) == []
    finally:
        broker.stop()
    assert (tmp_path / "b" / "broker.log").exists()
