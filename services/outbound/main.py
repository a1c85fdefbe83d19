"""The publication process: the ticket-events topic, the orgs' webhooks, their ExtraHop detection
tracking and their notifications, each from its own checkpoint (`python -m services.cli relay`)."""

import asyncio

from aiokafka.errors import KafkaError

from services.bootstrap import create_placement, stop_on_signals
from services.delivery.egress import fence_of
from services.delivery.mail import Mailer
from services.kafka.topics import ensure_topics
from services.metrics import serve_metrics
from services.outages import until_available
from services.outbound.deliveries import run_deliveries
from services.outbound.extrahop import ExtraHopTracking
from services.outbound.notifications import Notifications
from services.outbound.relay import run_relay
from services.outbound.webhooks import Webhooks
from services.settings import Settings


async def serve(settings: Settings) -> None:
    serve_metrics(settings, "relay")
    stop = stop_on_signals()
    await until_available(lambda: ensure_topics(settings), (KafkaError,), "relay: creating topics", stop)
    placement = await create_placement(settings)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_relay(settings, placement, stop))
            mailer = Mailer(settings.smtp) if settings.smtp else None
            for pool in placement.pools:  # each database's log, from its own checkpoints
                channels = [
                    Webhooks(settings.ticket_url_template),
                    ExtraHopTracking(),
                    Notifications(settings.ticket_url_template, mailer),
                ]
                database = placement.name_of(pool)
                tg.create_task(run_deliveries(pool, stop, channels, fence_of(settings), database=database))
    finally:
        await placement.close()
