import asyncio
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from services.delivery.mail import Mailer
from services.devstack.embedded import EmbeddedBroker, EmbeddedPostgres, Infra, infrastructure
from services.devstack.mailsink import MailSink
from services.settings import Settings


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


def test_the_mail_sink_writes_each_mail_to_a_file(tmp_path: Path) -> None:
    """`make run`'s SMTP server: what the notifier sends lands under .state/mail/, one file each."""
    sink = MailSink(tmp_path / "mail")
    sink.start()
    try:
        smtp = Settings.from_env({"TICKETING_ENV": "test", "TICKETING_SMTP_URL": sink.url}).smtp
        assert smtp is not None
        done = asyncio.run(Mailer(smtp).send("ana@soc.example", "[critical] New ticket: #7", "see #7", "m1"))
        assert done == (True, None)
    finally:
        sink.stop()
    [mail] = list((tmp_path / "mail").iterdir())
    text = mail.read_text()
    assert mail.suffix == ".eml" and "X-Envelope-To: ana@soc.example" in text
    assert "Subject: [critical] New ticket: #7" in text and "see #7" in text
