"""Webhook notifications: every ticket event of an org that set a `webhook_url`, POSTed to it.

The seed's extension sends its webhooks, gzip-compressed, to the org's webhook endpoint; here they
follow the event store like the `ticket-events` topic and carry the same message (`action`,
`ticket_id`, `ticket_number`, `oid`, `by`, `ts`, `metadata`, plus `event_id`, `version`,
`position`), gzipped, with `Content-Encoding: gzip`.

Two steps, so that no endpoint ever holds a database transaction open: the subscription only
queues each event in `webhook_queue`, in the transaction that moves its checkpoint; the deliverer
POSTs from that queue outside any transaction, each delivery under a hard deadline, and deletes
what went through. At least once (receivers dedup on `event_id`), each ticket's events in order,
up to PER_ORG of an org's tickets at a time. An endpoint that fails after the retries stops its
org's deliveries until RETRY_AFTER_S has passed, and holds up neither the log nor other orgs.
"""

import asyncio
import contextlib
import gzip
import logging
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import asyncpg
import msgspec

from services.commands.configs import load_configs
from services.eventstore.postgres import UNAVAILABLE, RecordedEvent
from services.eventstore.subscription import run_subscription
from services.outages import describe
from services.outbound.relay import NOT_TICKET_EVENTS, encode_message, to_message

log = logging.getLogger(__name__)

WEBHOOKS_NAME = "webhooks"
WEBHOOK_LOCKS = 7263  # advisory lock key space: one deliverer per org at a time
ATTEMPTS = 3
TIMEOUT_S = 10.0  # one attempt
DEADLINE_S = 30.0  # one delivery, every attempt and pause included
RETRY_AFTER_S = 60.0  # an org whose endpoint failed is tried again after this
PASS_ROWS = 500  # an org's queued events read per pass
ORG_BUDGET_S = 30.0  # an org's share of a pass (one event always goes)
PER_ORG = 8  # an org's tickets delivered at once
REFUSED = frozenset({400, 405, 409, 410, 411, 413, 414, 415, 422})


@dataclass(frozen=True)
class Delivery:
    session: aiohttp.ClientSession
    timeout_s: float = TIMEOUT_S
    pause_s: float = 0.5  # before the 2nd attempt; doubled each time
    deadline_s: float = DEADLINE_S

    async def post(self, url: str, body: bytes, event_id: str) -> str | None:
        """None once the endpoint took it (2xx) or refused this very message (REFUSED: asking
        again would not change it; logged and skipped, so one message cannot hold up the org's
        others), else why not (a class, see error_class), after the retries and within the
        deadline. 401, 403 and 404 say the endpoint is set up wrong, not the message: those wait,
        like a server error or a timeout."""
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._attempts(url, body, event_id)
        except TimeoutError:
            log.warning("webhook %s to %s: past its %.0f s deadline", event_id, url, self.deadline_s)
            return "timed out"

    async def _attempts(self, url: str, body: bytes, event_id: str) -> str | None:
        error = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.pause_s * 2 ** (attempt - 1))
            try:
                async with self.session.post(
                    url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "Content-Encoding": "gzip",
                        "X-Ticketing-Event-Id": event_id,
                    },
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                    allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        return None
                    error = f"HTTP {response.status}"
                    if response.status in REFUSED:
                        log.error("webhook %s refused by %s (%s); skipped", event_id, url, error)
                        return None
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a URL yarl refuses
                error = error_class(exc)
                log.warning("webhook %s to %s: %s (%s)", event_id, url, error, describe(exc)[:500])
        return error


def error_class(exc: BaseException) -> str:
    """What the org's admin is shown of a failed delivery: its class, never the client's own words.
    Those name the address and tell a refused port from a filtered one and a live service from
    none, which would make the webhook URL a port scanner of the relay's network. The detail goes
    to the operator's log."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return "invalid URL"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    return "could not reach the endpoint"


class Webhooks:
    """The subscription's batch handler: queues, in the transaction that moves its checkpoint,
    every ticket event of the orgs that have a webhook. No network here."""

    def __init__(self, queued: asyncio.Event | None = None) -> None:
        self.queued = queued  # set when there is something for the deliverer

    async def publish(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        by_org: dict[str, list[RecordedEvent]] = {}
        for e in events:
            oid = e.metadata.get("oid")
            if e.type not in NOT_TICKET_EVENTS and isinstance(oid, str):
                by_org.setdefault(oid, []).append(e)
        if not by_org:
            return
        hooked = {o for o, c in (await load_configs(conn, by_org)).items() if c.webhook_url}
        rows = [
            (o, e.position, e.stream_id, e.event_id, gzip.compress(encode_message(to_message(e))))
            for o in sorted(hooked)
            for e in by_org[o]
        ]
        if rows:
            await conn.executemany(
                "INSERT INTO webhook_queue (oid, position, stream_id, event_id, body)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (oid, position) DO NOTHING",
                rows,
            )
            if self.queued is not None:
                self.queued.set()


async def deliver(
    pool: asyncpg.Pool,
    delivery: Delivery,
    *,
    retry_after_s: float = RETRY_AFTER_S,
    budget_s: float = ORG_BUDGET_S,
) -> int:
    """One pass over the queue: each org that is due (never failed, or failed over `retry_after_s`
    ago) gets its oldest events delivered, each ticket's in order, until one fails or its budget is
    spent; returns how many went through. Orgs go one after another; an org's POSTs happen with no
    transaction open. An org that removed its webhook_url drops its queue."""
    async with pool.acquire() as conn:
        oids = [
            r[0]
            for r in await conn.fetch(
                "SELECT oid FROM webhook_queue GROUP BY oid HAVING max(last_attempt_at) IS NULL"
                " OR max(last_attempt_at) <= now() - make_interval(secs => $1) ORDER BY oid",
                retry_after_s,
            )
        ]
        urls = {o: c.webhook_url for o, c in (await load_configs(conn, oids)).items()}
    delivered = 0
    for oid in oids:
        delivered += await _deliver_org(pool, delivery, oid, urls[oid], budget_s)
    return delivered


async def _deliver_org(
    pool: asyncpg.Pool, delivery: Delivery, oid: str, url: str | None, budget_s: float
) -> int:
    async with pool.acquire() as conn:
        # A session lock (no transaction stays open): another relay replica skips this org meanwhile.
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", WEBHOOK_LOCKS, oid):
            return 0
        try:
            if url is None:
                dropped = await conn.execute("DELETE FROM webhook_queue WHERE oid = $1", oid)
                log.warning("webhooks of %s dropped (%s): the org has no webhook_url any more", oid, dropped)
                return 0
            rows = await conn.fetch(
                "SELECT position, stream_id, event_id, body FROM webhook_queue WHERE oid = $1"
                " ORDER BY position LIMIT $2",
                oid,
                PASS_ROWS,
            )
            return await _send(conn, delivery, oid, url, rows, budget_s)
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", WEBHOOK_LOCKS, oid)


async def _send(
    conn: asyncpg.Connection,
    delivery: Delivery,
    oid: str,
    url: str,
    rows: list[asyncpg.Record],
    budget_s: float,
) -> int:
    """Each ticket's events in order, up to PER_ORG tickets at a time (one event per round trip
    would cap an org near 1/RTT). From the first failure, or once the budget is spent, the org's
    remaining events stay queued. The bookkeeping after each POST is one short statement."""
    deadline = asyncio.get_running_loop().time() + budget_s
    slots, book = asyncio.Semaphore(PER_ORG), asyncio.Lock()  # one connection: one statement at a time
    sent, failed = 0, False

    async def ticket(stream: list[asyncpg.Record]) -> None:
        nonlocal sent, failed
        for position, _, event_id, body in stream:
            async with slots:
                if failed or (sent and asyncio.get_running_loop().time() > deadline):  # one always goes
                    return
                error = await delivery.post(url, body, str(event_id))
            async with book:
                if error is None:
                    await conn.execute(
                        "DELETE FROM webhook_queue WHERE oid = $1 AND position = $2", oid, position
                    )
                    sent += 1
                    continue
                failed = True
                log.warning("webhook of %s failed (%s); the org's events wait", oid, error)
                await conn.execute(
                    "UPDATE webhook_queue SET attempts = attempts + $3, last_error = $4,"
                    " last_attempt_at = now(), first_failed_at = coalesce(first_failed_at, now())"
                    " WHERE oid = $1 AND position = $2",
                    oid,
                    position,
                    ATTEMPTS,
                    error,
                )
                return

    streams: dict[object, list[asyncpg.Record]] = {}
    for row in rows:
        streams.setdefault(row["stream_id"], []).append(row)
    await asyncio.gather(*(ticket(stream) for stream in streams.values()))
    return sent


class WebhookStatus(msgspec.Struct, frozen=True):
    """What an org's admin needs to see that its endpoint is failing, and since when."""

    webhook_url: str | None
    waiting: int  # events not delivered yet
    first_failed_at: datetime | None  # of the oldest failed one
    last_attempt_at: datetime | None
    last_error: str | None  # why the oldest failed one has not gone through


async def status(conn: asyncpg.Connection, oid: str) -> WebhookStatus:
    url = (await load_configs(conn, [oid]))[oid].webhook_url
    waiting, first_failed_at, last_attempt_at, last_error = await conn.fetchrow(
        "SELECT count(*), min(first_failed_at), max(last_attempt_at),"
        " (array_agg(last_error ORDER BY position) FILTER (WHERE last_error IS NOT NULL))[1]"
        " FROM webhook_queue WHERE oid = $1",
        oid,
    )
    return WebhookStatus(url, waiting, first_failed_at, last_attempt_at, last_error)


async def run_webhooks(pool: asyncpg.Pool, stop: asyncio.Event, every_s: float = 1.0) -> None:
    """The subscription (queues) and the deliverer (POSTs), until `stop` is set."""
    queued = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        delivery = Delivery(session)

        async def deliverer() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(queued.wait(), every_s)
                queued.clear()
                try:
                    await deliver(pool, delivery)
                except UNAVAILABLE as exc:  # the next pass tries again
                    log.warning("webhooks: delivery pass failed: %s", describe(exc))

        async with asyncio.TaskGroup() as tg:
            deliveries = tg.create_task(deliverer())
            await run_subscription(pool, WEBHOOKS_NAME, Webhooks(queued).publish, stop=stop, limit=500)
            await deliveries
