"""Prometheus metrics of every process, named in one place.

Each process exposes its own (prometheus_client's default registry): the API on its `/metrics`
route, the others on a small listener at `TICKETING_METRICS_PORT`. Labels are bounded sets: a
route template, an HTTP status, a reason, a channel, a subscription's name, a partition number;
never an org id, a raw path or a detection id, so that a tenant's traffic cannot grow the series.
"""

import logging
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from services.eventstore import db
from services.settings import Settings

log = logging.getLogger(__name__)

# --- ingest -----------------------------------------------------------------------------------
CONSUMED: Final = Counter("ticketing_detections_consumed", "Messages read from the detections topic")
TICKETED: Final = Counter("ticketing_detections_ticketed", "Detections that opened a new ticket")
GROUPED: Final = Counter("ticketing_detections_grouped", "Detections added to an existing ticket by grouping")
DEDUPLICATED: Final = Counter(
    "ticketing_detections_deduplicated", "Detections already held by a ticket of their org (nothing recorded)"
)
DROPPED: Final = Counter("ticketing_detections_dropped", "Detections of unsubscribed (purged) orgs, dropped")
SUPPRESSED: Final = Counter(
    "ticketing_detections_suppressed", "Detections held by a suppression (kept, no ticket)"
)
REOPENED: Final = Counter(
    "ticketing_tickets_reopened_by_recurrence", "Resolved tickets a recurring detection reopened"
)
DEAD_LETTERED: Final = Counter(
    "ticketing_detections_dead_lettered", "Messages sent to the dead-letter topic, by reason", ["reason"]
)
BATCH_SIZE: Final = Histogram(
    "ticketing_ingest_batch_size",
    "Messages per ingest batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
)
BATCH_SECONDS: Final = Histogram(
    "ticketing_ingest_batch_seconds",
    "Time to write one ingest batch (parse, dedup, group, append), seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CONSUMER_LAG: Final = Gauge(
    "ticketing_ingest_consumer_lag",
    "Messages of a detections partition not yet read by this worker (high watermark - position)",
    ["partition"],
)

# --- event store and its readers --------------------------------------------------------------
EVENTS_APPENDED: Final = Counter("ticketing_events_appended", "Events appended to the event store")
LOG_HEAD: Final = Gauge(
    "ticketing_log_head_position",
    "Position of the newest committed event (per database of a placement: `home`, `shard N`)",
    ["database"],
)
BEHIND: Final = Gauge(
    "ticketing_subscription_behind_events",
    "Events a reader of the log (projection, relay, webhooks, integrations) has still to handle",
    ["subscription", "database"],
)

# --- outbound ---------------------------------------------------------------------------------
DELIVERIES: Final = Counter(
    "ticketing_deliveries",
    "Outbound requests (webhooks, ExtraHop), by channel and outcome (delivered, refused, failed)",
    ["channel", "outcome"],
)
DELIVERY_BACKLOG: Final = Gauge(
    "ticketing_delivery_backlog", "Outbound requests waiting in the delivery queue", ["channel"]
)
PUBLISHED: Final = Counter("ticketing_events_published", "Events published to the ticket-events topic")

# --- scheduler --------------------------------------------------------------------------------
SLA_BREACHES: Final = Counter("ticketing_sla_breaches", "SLA breaches recorded, by clock", ["kind"])
SLA_AT_RISK: Final = Counter(
    "ticketing_sla_at_risk", "SLA clocks found at risk (sla_at_risk), by clock", ["kind"]
)
ESCALATION_STEPS: Final = Counter(
    "ticketing_escalation_steps", "Steps of escalation policies taken on unacknowledged tickets"
)
NOTIFICATIONS: Final = Counter(
    "ticketing_notifications",
    "Notification messages queued, by channel type and whether sent alone or held for a roll-up",
    ["type", "outcome"],
)
AUTO_CLOSED: Final = Counter("ticketing_tickets_auto_closed", "Resolved tickets closed by the scheduler")

# --- API --------------------------------------------------------------------------------------
REQUEST_SECONDS: Final = Histogram(
    "ticketing_api_request_seconds",
    "API requests by method, route template and status, seconds",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class PoolCollector(Collector):
    """Connections of this process's database pools: in use, idle, and the most it may open."""

    def __init__(self) -> None:
        self.pools: dict[str, db.Pool] = {}

    def collect(self):  # type: ignore[no-untyped-def]  # the Collector protocol's signature
        family = GaugeMetricFamily(
            "ticketing_db_pool_connections", "Database pool connections", labels=["pool", "state"]
        )
        for name, pool in self.pools.items():
            size, idle = pool.get_size(), pool.get_idle_size()
            family.add_metric([name, "in_use"], size - idle)
            family.add_metric([name, "idle"], idle)
            family.add_metric([name, "max"], pool.get_max_size())
        yield family


POOLS: Final = PoolCollector()
REGISTRY.register(POOLS)


def watch_pool(pool: db.Pool, name: str = "main") -> db.Pool:
    POOLS.pools[name] = pool
    return pool


def serve_metrics(settings: Settings, process: str) -> None:
    """This process's listener, if a port is set (the API serves `/metrics` itself)."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
        log.info("%s metrics on http://%s:%d/metrics", process, settings.metrics_host, settings.metrics_port)
