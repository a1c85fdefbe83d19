"""The faust-streaming app: batches of the detections topic go through `ingest_batch`.

faust holds no state here (no Tables): dedup lives in PostgreSQL, in the batch's transaction.
Offsets are acknowledged only after the batch committed (acks are manual, see `batches`); any
error that is not a passing outage ends the process at once (the supervisor restarts it) so that
nothing unprocessed is ever acknowledged.
"""

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from faust.types import TP
from faust.types.tuples import Message

from services import logs
from services.bootstrap import create_placement, json_lines, make_handler
from services.eventstore.placement import Placement
from services.eventstore.postgres import UNAVAILABLE
from services.ingest.batches import consume_in_batches
from services.ingest.faust_adapter import (
    BytesSchema,
    StoppableApp,
    UncountedMonitor,
    check_versions,
    start_worker,
    use_transport,
)
from services.ingest.pipeline import RawRecord, ingest_batch
from services.kafka.clients import faust_credentials
from services.metrics import CONSUMER_LAG, serve_metrics
from services.settings import Settings

log = logging.getLogger(__name__)


def faust_app(settings: Settings) -> tuple[faust.App, faust.TopicT]:
    """The faust app and the detections topic as the ingest worker runs them (the benchmark's
    count-only writer uses the same, to measure faust's own ceiling)."""
    bootstrap, _ = settings.require_infra()
    kafka = settings.kafka
    check_versions()
    app = StoppableApp(
        settings.ingest_group,
        broker=f"kafka://{bootstrap.replace(',', ';kafka://')}",
        processing_guarantee="at_least_once",
        topic_replication_factor=settings.replication_factor,
        topic_partitions=settings.detections_partitions,
        broker_session_timeout=kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=kafka.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=kafka.rebalance_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        datadir=str(settings.state_dir / "faust"),
        web_enabled=False,
        # faust stops fetching for a whole second once this buffer is full: it must hold more
        # than a second of intake or the worker idles
        stream_buffer_maxsize=settings.ingest_buffer,
        Monitor=UncountedMonitor,
        broker_credentials=faust_credentials(settings),
        logging_config=logs.logging_config(settings.log_level, "ingest", json_lines(settings)),
    )
    use_transport(app, settings.ingest_fetch_max_wait_ms)
    detections = app.topic(
        settings.topics.detections,
        schema=BytesSchema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"),
        partitions=settings.detections_partitions,
    )
    return app, detections


def create_app(settings: Settings) -> faust.App:
    app, detections = faust_app(settings)
    state: dict[str, Any] = {}

    async def send_dead_letters(messages: Sequence[tuple[bytes | None, bytes]]) -> None:
        futures = [
            await app.producer.send(settings.topics.deadletter, key, value, None, None, None)
            for key, value in messages
        ]
        await asyncio.gather(*futures)

    @app.agent(detections)
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        if "placement" not in state:
            state["placement"] = await create_placement(settings)
            state["handler"] = make_handler()
        placement, handler = state["placement"], state["handler"]

        async def write(messages: list[Message]) -> None:
            records = [
                RawRecord(
                    topic=m.topic,
                    partition=m.partition,
                    offset=m.offset,
                    key=m.key,
                    value=m.value,
                    timestamp_ms=int(m.timestamp * 1000) if m.timestamp else None,
                )
                for m in messages
            ]
            await _process_until_done(placement, handler, records, send_dead_letters, settings.default_oid)
            record_lag(app, records)

        await consume_in_batches(
            stream, settings.ingest_batch_size, settings.ingest_batch_within_s, write, settings.ingest_writers
        )

    return app


def offsets_of(records: list[RawRecord]) -> dict[str, str]:
    """The batch's offsets per partition, `first-last`: the detections' events carry
    `causation_id` = `kafka:<topic>/<partition>@<offset>`, so a log line leads to them."""
    spans: dict[int, tuple[int, int]] = {}
    for r in records:
        low, high = spans.get(r.partition, (r.offset, r.offset))
        spans[r.partition] = (min(low, r.offset), max(high, r.offset))
    return {str(p): f"{low}-{high}" for p, (low, high) in sorted(spans.items())}


def record_lag(app: faust.App, records: list[RawRecord]) -> None:
    """Each partition's lag after this batch: the high watermark the broker sent with its last
    fetch, minus the next offset to read (no ListOffsets call, which the dev broker answers oddly)."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    for (topic, partition), offset in last.items():
        try:
            high = app.consumer.highwater(TP(topic, partition))
        except (KeyError, AttributeError, AssertionError):  # not assigned any more, or not started
            continue
        if high is not None and high >= 0:
            CONSUMER_LAG.labels(str(partition)).set(max(0, high - offset - 1))


async def _process_until_done(
    placement: Placement, handler: Any, records: list[RawRecord], sink: Any, default_oid: str | None
) -> None:
    delay = 0.2
    while True:
        try:
            result = await ingest_batch(placement, handler, records, sink, default_oid=default_oid)
            log.info(
                "batch of %d: %d tickets, %d grouped, %d duplicates, %d updated, %d dead letters",
                len(records),
                result.tickets_created,
                result.grouped,
                result.duplicates,
                result.updated,
                result.dead_letters,
                extra={"topic": records[0].topic, "offsets": offsets_of(records), "count": len(records)},
            )
            return
        except (*UNAVAILABLE, KafkaError) as exc:
            log.warning("ingest: database or broker unavailable (%s); retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except asyncio.CancelledError:
            # A normal stop: the transaction rolls back and the batch, never acked, is redelivered.
            log.info("ingest: stopping; the batch of %d is left for redelivery", len(records))
            raise
        except BaseException:
            log.critical("ingest: unexpected failure; exiting without acknowledging the batch", exc_info=True)
            logging.shutdown()
            os._exit(70)


def run_worker(settings: Settings, app: faust.App) -> None:
    """Start a faust worker for this app in this process (blocks until it stops); quiet, so that
    the process's output is its log lines alone."""
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    level = settings.log_level.lower()
    start_worker(app, {"warning": "warn", "critical": "crit"}.get(level, level))  # faust's own names


def main() -> None:
    settings = Settings.from_env()
    serve_metrics(settings, "ingest")
    run_worker(settings, create_app(settings))
