"""Webhook notifications: every ticket event of an org that set a `webhook_url`, POSTed to it.

The seed's extension sends its webhooks, gzip-compressed, to the org's webhook endpoint; here they
follow the event store like the `ticket-events` topic and carry the same message (`action`,
`ticket_id`, `ticket_number`, `oid`, `by`, `ts`, `metadata`, plus `event_id`, `version`,
`position`), gzipped, with `Content-Encoding: gzip`. At least once (receivers dedup on
`event_id`), each ticket's events in order, up to PER_ORG of an org's tickets at a time. An
endpoint that still fails after the retries holds up neither the log nor other orgs: its event,
and each later one of that org, waits in `webhook_failures`, which is sent again, oldest first,
every RESEND_EVERY_S until it goes through.
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
from services.eventstore.postgres import RecordedEvent
from services.eventstore.subscription import run_subscription
from services.outbound.relay import NOT_TICKET_EVENTS, encode_message, to_message

log = logging.getLogger(__name__)

WEBHOOKS_NAME = "webhooks"
WEBHOOK_LOCKS = 7263  # advisory lock key space: one org's deliveries at a time
ATTEMPTS = 3
TIMEOUT_S = 10.0
RESEND_EVERY_S = 60.0
RESEND_BATCH = 500
BATCH_BUDGET_S = 5.0
RESEND_BUDGET_S = 30.0
PER_ORG = 8  # an org's tickets delivered at once
QUEUED = "queued behind the org's earlier undelivered events"
REFUSED = frozenset({400, 405, 409, 410, 411, 413, 414, 415, 422})


@dataclass(frozen=True)
class Delivery:
    session: aiohttp.ClientSession
    timeout_s: float = TIMEOUT_S
    pause_s: float = 0.5  # before the 2nd attempt; doubled each time

    async def post(self, url: str, body: bytes, event_id: str) -> str | None:
        """None once the endpoint took it (2xx) or refused this very message (REFUSED: asking
        again would not change it; logged and skipped, so one message cannot hold up the org's
        others), else why not, after the retries. 401, 403 and 404 say the endpoint is set up
        wrong, not the message: those wait, like a server error or a timeout."""
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
                log.warning(
                    "webhook %s to %s: %s (%s)", event_id, url, error, f"{type(exc).__name__}: {exc}"[:500]
                )
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


_RECORD = """
INSERT INTO webhook_failures (oid, position, event_id, body, attempts, last_error)
VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (oid, position) DO NOTHING
"""


async def _take_org(conn: asyncpg.Connection, oid: str) -> bool:
    """The org's delivery lock for this transaction, if nobody (the resender) holds it."""
    taken: bool = await conn.fetchval(
        "SELECT pg_try_advisory_xact_lock(hashtextextended($1, $2))", oid, WEBHOOK_LOCKS
    )
    return taken


class Webhooks:
    """The subscription's batch handler: runs in the transaction that moves its checkpoint. An org
    whose endpoint is slow gets `budget_s` of a batch; the rest of its events wait in the table
    for the resender, which holds up only that org."""

    def __init__(self, delivery: Delivery, budget_s: float = BATCH_BUDGET_S) -> None:
        self.delivery = delivery
        self.budget_s = budget_s

    async def publish(self, conn: asyncpg.Connection, events: list[RecordedEvent]) -> None:
        by_org: dict[str, list[RecordedEvent]] = {}
        for e in events:
            oid = e.metadata.get("oid")
            if e.type not in NOT_TICKET_EVENTS and isinstance(oid, str):
                by_org.setdefault(oid, []).append(e)
        if not by_org:
            return
        urls = {o: c.webhook_url for o, c in (await load_configs(conn, by_org)).items() if c.webhook_url}
        if not urls:
            return
        waiting = {
            r[0]
            for r in await conn.fetch(
                "SELECT DISTINCT oid FROM webhook_failures WHERE oid = ANY($1::text[])", list(urls)
            )
        }
        free = {o for o in urls if o not in waiting and await _take_org(conn, o)}
        rows = await asyncio.gather(
            *(self._org(o, urls[o], by_org[o], blocked=o not in free) for o in sorted(urls))
        )
        failed = [row for org_rows in rows for row in org_rows]
        if failed:
            await conn.executemany(_RECORD, failed)

    async def _org(
        self, oid: str, url: str, events: list[RecordedEvent], *, blocked: bool
    ) -> list[tuple[object, ...]]:
        """Each ticket's events in order, up to PER_ORG tickets at a time (one event per round trip
        to a remote endpoint would otherwise cap an org near 1/RTT). From the first failure, or
        once the budget is spent, the org's remaining events wait in the table."""
        failed: list[tuple[object, ...]] = []
        deadline = asyncio.get_running_loop().time() + self.budget_s
        sent = 0
        slots = asyncio.Semaphore(PER_ORG)

        async def ticket(stream: list[RecordedEvent]) -> None:
            nonlocal blocked, sent
            for e in stream:
                body = gzip.compress(encode_message(to_message(e)))
                async with slots:
                    late = sent and asyncio.get_running_loop().time() > deadline  # one always goes
                    if blocked or late:
                        failed.append((oid, e.position, e.event_id, body, 0, QUEUED))
                        blocked = True
                        continue
                    error = await self.delivery.post(url, body, str(e.event_id))
                if error is not None:
                    log.warning("webhook of %s failed (%s); it and the org's later events wait", oid, error)
                    failed.append((oid, e.position, e.event_id, body, ATTEMPTS, error))
                    blocked = True
                else:
                    sent += 1

        streams: dict[object, list[RecordedEvent]] = {}
        for e in events:
            streams.setdefault(e.stream_id, []).append(e)
        await asyncio.gather(*(ticket(stream) for stream in streams.values()))
        return failed


async def resend(
    pool: asyncpg.Pool, delivery: Delivery, limit: int = RESEND_BATCH, budget_s: float = RESEND_BUDGET_S
) -> int:
    """One pass over the waiting events, oldest first per org, each org stopping at its first
    failure or when its `budget_s` is spent (its transaction stays short); returns how many went
    through. An org that removed its webhook_url drops its queue."""
    async with pool.acquire() as conn:
        oids = [r[0] for r in await conn.fetch("SELECT DISTINCT oid FROM webhook_failures")]
        urls = {o: c.webhook_url for o, c in (await load_configs(conn, oids)).items()}
    delivered = 0
    for oid in sorted(oids):
        async with pool.acquire() as conn, conn.transaction():
            if not await _take_org(conn, oid):
                continue  # its new events are being queued right now; next pass
            url = urls[oid]
            if url is None:
                dropped = await conn.execute("DELETE FROM webhook_failures WHERE oid = $1", oid)
                log.warning("webhooks of %s dropped (%s): the org has no webhook_url any more", oid, dropped)
                continue
            rows = await conn.fetch(
                "SELECT position, event_id, body FROM webhook_failures WHERE oid = $1"
                " ORDER BY position LIMIT $2",
                oid,
                limit,
            )
            deadline = asyncio.get_running_loop().time() + budget_s
            for i, (position, event_id, body) in enumerate(rows):
                if i and asyncio.get_running_loop().time() > deadline:  # one always goes
                    break
                error = await delivery.post(url, body, str(event_id))
                if error is not None:
                    await conn.execute(
                        "UPDATE webhook_failures SET attempts = attempts + $3, last_error = $4,"
                        " last_attempt_at = now() WHERE oid = $1 AND position = $2",
                        oid,
                        position,
                        ATTEMPTS,
                        error,
                    )
                    break
                await conn.execute(
                    "DELETE FROM webhook_failures WHERE oid = $1 AND position = $2", oid, position
                )
                delivered += 1
    return delivered


class WebhookStatus(msgspec.Struct, frozen=True):
    """What an org's admin needs to see that its endpoint is failing, and since when."""

    webhook_url: str | None
    waiting: int  # events not delivered yet
    first_failed_at: datetime | None  # of the oldest of them
    last_attempt_at: datetime | None
    last_error: str | None  # why the oldest has not gone through


async def status(conn: asyncpg.Connection, oid: str) -> WebhookStatus:
    url = (await load_configs(conn, [oid]))[oid].webhook_url
    waiting, first_failed_at, last_attempt_at, last_error = await conn.fetchrow(
        "SELECT count(*), (array_agg(first_failed_at ORDER BY position))[1], max(last_attempt_at),"
        " (array_agg(last_error ORDER BY position))[1] FROM webhook_failures WHERE oid = $1",
        oid,
    )
    return WebhookStatus(url, waiting, first_failed_at, last_attempt_at, last_error)


async def run_webhooks(pool: asyncpg.Pool, stop: asyncio.Event, every_s: float = RESEND_EVERY_S) -> None:
    """The subscription and the resender, until `stop` is set."""
    async with aiohttp.ClientSession() as session:
        delivery = Delivery(session)

        async def resender() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)
                if not stop.is_set():
                    try:
                        if sent := await resend(pool, delivery):
                            log.info("webhooks: %d waiting events delivered", sent)
                    except Exception:  # the database away, say: the next pass tries again
                        log.exception("webhooks: resend pass failed")

        async with asyncio.TaskGroup() as tg:
            tg.create_task(resender())
            tg.create_task(
                run_subscription(pool, WEBHOOKS_NAME, Webhooks(delivery).publish, stop=stop, limit=500)
            )
