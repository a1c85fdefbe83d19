"""Send detections to the detections topic: from a JSON-lines file, or generated samples."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from services.devstack.samples import key_for
from services.kafka.clients import client_options
from services.settings import Settings


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


async def publish(settings: Settings, detections: Iterable[dict[str, Any]], oid: str) -> int:
    topic = settings.topics.detections
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=5, max_batch_size=262144)
    await producer.start()
    sent = 0
    try:
        for detection in detections:
            await producer.send(topic, json.dumps(detection).encode(), key=key_for(detection, oid))
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return sent
