"""Creating the service's topics (idempotent) and the message schemas published on them."""

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.kafka.clients import client_options
from services.settings import Settings

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = 36
# What one message we publish may weigh: under Kafka's default message.max.bytes and the
# producers' max_request_size (aiokafka's and faust's), all about 1 MB.
MAX_MESSAGE_BYTES = 1_000_000


async def ensure_topics(settings: Settings) -> None:
    replication = settings.replication_factor
    wanted = [
        NewTopic(settings.topics.detections, settings.detections_partitions, replication),
        NewTopic(settings.topics.deadletter, 1, replication),
        NewTopic(settings.topics.ticket_events, settings.detections_partitions, replication),
    ]
    admin = AIOKafkaAdminClient(**client_options(settings))
    try:
        await admin.start()
        response = await admin.create_topics(wanted)
        for name, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {name}: {message} (error {code})")
    finally:
        await admin.close()
