"""Publication path: the event store, in global order, to the `ticket-events` topic.

The events table is the outbox: an event is published only after it is committed, and the
relay's checkpoint moves only after the broker acknowledged the batch (at-least-once, with the
event id for consumers to dedup). Keyed by ticket id, so per-ticket order holds on every partition.
"""

import asyncio
import functools
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from services import metrics
from services.eventstore import db
from services.eventstore.placement import Placement
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import run_subscription
from services.kafka.clients import client_options
from services.kafka.messages import UNPUBLISHED, encode_message, to_message
from services.outages import until_available
from services.settings import Settings

log = logging.getLogger(__name__)

RELAY_NAME = "relay:ticket-events"


class Relay:
    def __init__(
        self, producer: AIOKafkaProducer, topic: str, ticket_url_template: str | None = None
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.ticket_url_template = ticket_url_template

    async def publish(self, conn: db.Connection, events: list[RecordedEvent]) -> None:
        messages = (
            (str(e.stream_id).encode(), encode_message(to_message(e, self.ticket_url_template)))
            for e in events
            if e.type not in UNPUBLISHED
        )
        metrics.PUBLISHED.inc(await publish_batches(self.producer, self.topic, messages))


async def publish_batches(
    producer: AIOKafkaProducer, topic: str, messages: Iterable[tuple[bytes, bytes]]
) -> int:
    """Keyed messages in record batches of our own, one run per partition (a future and a partition
    lookup per message were a fifth of the relay's CPU); a partition's batches go in order, each
    once the one before is acknowledged. Returns how many were published."""
    partitions = sorted(await producer.partitions_for(topic))
    runs: dict[int, list[Any]] = {}
    published = 0
    for key, value in messages:
        run = runs.setdefault(partition_of(key, partitions, partitions), [producer.create_batch()])
        if run[-1].append(key=key, value=value, timestamp=None) is None:  # full: the next one,
            run.append(producer.create_batch())  # which takes a first message of any size
            run[-1].append(key=key, value=value, timestamp=None)
        published += 1

    async def send(partition: int, batches: list[Any]) -> None:
        for batch in batches:
            await (await producer.send_batch(batch, topic, partition=partition))

    await asyncio.gather(*(send(p, run) for p, run in runs.items()))
    return published


@functools.lru_cache(maxsize=1 << 16)
def _key_hash(key: bytes) -> int:
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


def partition_of(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's default partitioner (the Java client's murmur2: every client agrees on a ticket's
    partition), its pure-Python hash remembered per ticket, whose events come in runs (it was a
    tenth of the relay's CPU)."""
    if key is None:
        partition: int = DefaultPartitioner()(key, all_partitions, available)
        return partition
    return all_partitions[_key_hash(key) % len(all_partitions)]


def make_producer(settings: Settings) -> AIOKafkaProducer:
    # acks=all and one in-flight batch per partition (aiokafka's behaviour) keep per-key order.
    return AIOKafkaProducer(
        **client_options(settings), acks="all", linger_ms=5, max_batch_size=262144, partitioner=partition_of
    )


async def started_producer(settings: Settings, stop: asyncio.Event) -> AIOKafkaProducer | None:
    """A connected producer, waiting out a broker that is not there yet; None if stopped first."""

    async def attempt() -> AIOKafkaProducer:
        producer = make_producer(settings)
        try:
            await producer.start()
        except KafkaError:
            await producer.stop()
            raise
        return producer

    return await until_available(attempt, (KafkaError,), "relay: the broker", stop)


async def run_relay(settings: Settings, placement: Placement, stop: asyncio.Event) -> None:
    """One producer for every database's log: a ticket lives in one database, so its events keep
    their order (each database's relay checkpoint follows its log in order)."""
    producer = await started_producer(settings, stop)
    if producer is None:
        return
    try:
        relay = Relay(producer, settings.topics.ticket_events, settings.ticket_url_template)
        # A broker outage is waited out like a database one: nothing is checkpointed meanwhile.
        async with asyncio.TaskGroup() as tg:
            for pool in placement.pools:
                publishing = run_subscription(
                    pool,
                    RELAY_NAME,
                    relay.publish,
                    stop=stop,
                    limit=5000,
                    retry_on=(KafkaError,),
                    database=placement.name_of(pool),
                )
                tg.create_task(publishing)
    finally:
        await producer.stop()
