import asyncio
import json
from typing import Any

import pytest

from services.bootstrap import make_handler
from services.devstack.samples import generate
from services.eventstore import db
from services.ingest.pipeline import RawRecord, ingest_batch
from tests.integration.support import Sink


def records(detections: list[dict[str, Any]], start: int = 0) -> list[RawRecord]:
    return [
        RawRecord("detections", 0, start + i, b"org-x/c/s", json.dumps(d).encode())
        for i, d in enumerate(detections)
    ]


async def counts(pool: db.Pool) -> tuple[int, int]:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT count(*) FROM events"), await conn.fetchval(
            "SELECT count(*) FROM ticket_index"
        )


async def test_batch_creates_one_ticket_per_distinct_detection(pool: db.Pool) -> None:
    handler, sink = make_handler(), Sink()
    detections = list(generate("org-x", 40))
    batch = [*records(detections + detections[:10]), RawRecord("detections", 0, 999, None, b"garbage")]
    result = await ingest_batch(pool, handler, batch, sink, default_oid=None)
    assert (result.tickets_created, result.duplicates, result.dead_letters) == (40, 10, 1)
    assert len(sink.messages) == 1
    assert await counts(pool) == (40 + 10, 40)  # the 10 re-sends: one duplicates_seen each
    await ingest_batch(pool, handler, batch, sink, default_oid=None)  # the same messages again
    assert await counts(pool) == (50, 40)  # a redelivery counts nothing
    async with pool.acquire() as conn:
        numbers = [r[0] for r in await conn.fetch("SELECT ticket_number FROM ticket_index ORDER BY 1")]
    assert numbers == list(range(1, 41))


async def test_a_detection_holding_a_nul_character_is_dead_lettered_and_its_batch_goes_on(
    pool: db.Pool,
) -> None:
    """PostgreSQL stores no NUL: before, the append of the whole batch failed, on every re-delivery."""
    handler, sink = make_handler(), Sink()
    detections = list(generate("org-x", 5))
    detections[2]["cat"] = "bad\u0000cat"
    result = await ingest_batch(pool, handler, records(detections), sink, default_oid=None)
    assert (result.tickets_created, result.dead_letters) == (4, 1)
    [letter] = [json.loads(m) for m in sink.messages]
    assert "detection_cat holds a NUL character" in letter["error"]
    assert json.loads(letter["value"])["cat"] == "bad\u0000cat"  # the original, for replay
    assert await counts(pool) == (4, 4)


async def test_a_detection_the_database_refuses_is_found_by_halving_and_dead_lettered(
    pool: db.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net under the parser's checks: with the NUL check switched off, the database's
    refusal is traced to its one detection; the others of the batch are stored, in order."""
    monkeypatch.setattr("domain.detections.nul_at", lambda _: None)
    handler, sink = make_handler(), Sink()
    detections = list(generate("org-x", 9))
    at = next(i for i in range(4, 9) if "detect_id" in detections[i])  # a LimaCharlie one: it has `cat`
    detections[at]["cat"] = "bad\u0000cat"
    result = await ingest_batch(
        pool, handler, [*records(detections), *records(detections[:2], 9)], sink, default_oid=None
    )
    assert (result.tickets_created, result.duplicates, result.dead_letters) == (8, 2, 1)
    [letter] = [json.loads(m) for m in sink.messages]
    assert letter["error"].startswith("the database refused it") and letter["source"]["offset"] == at
    assert await counts(pool) == (8 + 2, 8)  # two re-sends counted
    async with pool.acquire() as conn:
        numbers = await conn.fetch("SELECT ticket_number FROM ticket_index ORDER BY ticket_number")
    assert [n[0] for n in numbers] == list(range(1, 9))  # none lost to the refused attempts


async def test_replaying_everything_changes_nothing(pool: db.Pool) -> None:
    handler, sink = make_handler(), Sink()
    detections = list(generate("org-x", 30))
    await ingest_batch(pool, handler, records(detections[:20]), sink, default_oid=None)
    await ingest_batch(pool, handler, records(detections[20:], 20), sink, default_oid=None)
    before = await counts(pool)
    again = await ingest_batch(pool, handler, records(detections), sink, default_oid=None)
    assert (again.tickets_created, again.duplicates) == (0, 30)
    assert await counts(pool) == before == (30, 30)


async def counted(pool: db.Pool) -> int:
    async with pool.acquire() as conn:
        total: int = await conn.fetchval(
            "SELECT coalesce(sum((data->>'count')::int), 0) FROM events WHERE type = 'duplicates_seen'"
        )
        return total


async def test_a_re_send_read_on_another_partition_counts_once_however_often_the_topic_is_replayed(
    pool: db.Pool,
) -> None:
    handler, sink = make_handler(), Sink()
    [detection] = generate("org-x", 1)
    first = RawRecord("detections", 0, 0, b"org-x/c/s", json.dumps(detection).encode())
    resent = RawRecord("detections", 1, 0, b"org-x/c/s", first.value)  # another partition
    for batch in ([first], [resent], [first, resent], [first], [resent]):  # then replays
        await ingest_batch(pool, handler, batch, sink, default_oid=None)
    assert (await counted(pool), await counts(pool)) == (1, (2, 1))


async def test_a_batch_and_a_stale_copy_of_it_at_once_count_its_re_sends_once(pool: db.Pool) -> None:
    """The previous owner of a partition after a rebalance may still be writing the batch its
    successor reads again."""
    sink = Sink()
    detections = list(generate("org-x", 20))
    await ingest_batch(pool, make_handler(), records(detections), sink, default_oid=None)
    resends = records(detections[:8] * 2, 20)
    await asyncio.gather(
        *(ingest_batch(pool, make_handler(), resends, sink, default_oid=None) for _ in range(3))
    )
    assert await counted(pool) == 16
