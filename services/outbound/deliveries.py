"""Outbound deliveries: what the service sends to the endpoints its orgs configure (webhooks, the
ExtraHop appliance), with one set of guarantees for all of them.

Two steps, so that no endpoint ever holds a database transaction open: a channel's subscription
only queues the requests its events call for in `delivery_queue`, in the transaction that moves
its checkpoint; the deliverer sends from that queue outside any transaction, each delivery under a
hard deadline, and deletes what went through. At least once (receivers dedup on the
`X-Ticketing-Event-Id`), each subject's requests in order (a ticket's webhook messages, a
detection's ExtraHop updates), up to PER_ORG subjects of an org at a time. An endpoint that fails
after the retries stops its org's deliveries on that channel until RETRY_AFTER_S has passed, and
holds up neither the log, nor other orgs, nor the org's other channels. A request the endpoint
refuses is counted in the org's status and skipped.
"""

import asyncio
import contextlib
import logging
import time
import urllib.parse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple
from uuid import UUID

import aiohttp

from services import metrics
from services.delivery.egress import EgressRefused, Fence, fenced_session
from services.delivery.queue import Target, orgs_with_targets
from services.delivery.signing import HEADER, sign, signing_keys
from services.eventstore import db, locks
from services.eventstore.postgres import UNAVAILABLE, RecordedEvent
from services.eventstore.subscription import BatchHandler, run_subscription
from services.outages import describe

log = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT_S = 10.0  # one attempt
DEADLINE_S = 30.0  # one delivery, every attempt and pause included
RETRY_AFTER_S = 60.0  # an org whose endpoint failed is tried again after this
PASS_ROWS = 500  # an org's queued requests read per pass
ORG_BUDGET_S = 30.0  # an org's share of a pass (one request always goes)
PER_ORG = 8  # an org's subjects delivered at once
# Asking again would not change these answers to this very request. 401, 403 and 404 usually say
# the endpoint is set up wrong, not the request: those wait, like a server error or a timeout.
REFUSED = frozenset({400, 405, 409, 410, 411, 413, 414, 415, 422})


class Queued(NamedTuple):
    """A row of `delivery_queue`: one request, as the deliverer will send it."""

    oid: str
    position: int  # of the event that called for it
    subject: str  # what sees its requests in order
    event_id: UUID
    body: bytes


class Request(NamedTuple):
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    label: str  # what the logs call it (never the secret)
    secret_url: bool = False  # the URL itself is a secret (a Slack or Teams webhook): never logged


class Outcome(NamedTuple):
    done: bool  # taken, or refused for good: it leaves the queue
    error: str | None  # why it was not taken: an error class, or "HTTP <status>"


class Channel(ABC):
    """One kind of outbound delivery: what its events queue, and how a queued row is sent."""

    name: str  # the queue's channel
    checkpoint: str  # its subscription's name
    refused: frozenset[int] = REFUSED

    @abstractmethod
    async def queue(self, conn: db.Connection, events: list[RecordedEvent]) -> list[Queued]:
        """The requests these events call for (in the subscription's transaction; no network)."""

    @abstractmethod
    async def targets(self, conn: db.Connection, oids: list[str]) -> dict[str, Target]:
        """The orgs' targets; an org left out has none any more and its queue is dropped."""

    @abstractmethod
    def request(self, target: Target, row: Queued) -> Request: ...

    async def orgs(self, conn: db.Connection) -> list[str]:
        """The orgs whose events the subscription reads: those that may have a target."""
        return await orgs_with_targets(conn, self.name)

    async def send(self, delivery: "Delivery", target: Target, row: Queued) -> Outcome:
        """One queued row, sent: an HTTP request, signed (a channel that is not HTTP says how)."""
        return await delivery.send(signed(self.request(target, row), target), self.refused)

    async def flush(self, conn: db.Connection) -> None:
        """Before each pass: requests that fall due with time rather than with an event (a roll-up
        whose minute is over), queued."""
        return None


@dataclass(frozen=True)
class Delivery:
    session: aiohttp.ClientSession  # a fenced one (egress.fenced_session) in the relay process
    timeout_s: float = TIMEOUT_S
    pause_s: float = 0.5  # before the 2nd attempt; doubled each time
    deadline_s: float = DEADLINE_S
    fence: Fence | None = None  # checks the URL itself; the session's resolver checks its addresses

    async def send(self, request: Request, refused: frozenset[int] = REFUSED) -> Outcome:
        """Taken (2xx) or refused (logged; one request cannot hold up the org's others), else
        why not (a class, see error_class), after the retries and within the deadline."""
        if self.fence is not None:
            try:
                self.fence.check_url(request.url)
            except EgressRefused as exc:
                log.warning("%s to %s: %s", request.label, _shown(request), error_class(exc))
                return Outcome(False, error_class(exc))
        try:
            async with asyncio.timeout(self.deadline_s):
                return await self._attempts(request, refused)
        except TimeoutError:
            log.warning("%s to %s: past its %.0f s deadline", request.label, _shown(request), self.deadline_s)
            return Outcome(False, "timed out")

    async def _attempts(self, request: Request, refused: frozenset[int]) -> Outcome:
        error = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(self.pause_s * 2 ** (attempt - 1))
            try:
                async with self.session.request(
                    request.method,
                    request.url,
                    data=request.body,
                    headers=request.headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                    allow_redirects=False,
                ) as response:
                    if 200 <= response.status < 300:
                        return Outcome(True, None)
                    error = f"HTTP {response.status}"
                    if response.status in refused:
                        log.error("%s refused by %s (%s); skipped", request.label, _shown(request), error)
                        return Outcome(True, error)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: a URL yarl refuses
                error = error_class(exc)
                # A client's own words may quote the URL: not for a secret one.
                detail = type(exc).__name__ if request.secret_url else describe(exc)[:500]
                log.warning("%s to %s: %s (%s)", request.label, _shown(request), error, detail)
        return Outcome(False, error)


def _shown(request: Request) -> str:
    """The request's URL as a log line may show it."""
    if not request.secret_url:
        return request.url
    return f"{urllib.parse.urlsplit(request.url).hostname} (its webhook URL is a secret)"


def error_class(exc: BaseException) -> str:
    """What the org's admin is shown of a failed delivery: its class, never the client's own words.
    Those name the address and tell a refused port from a filtered one and a live service from
    none, which would make an org's endpoint URL a port scanner of the relay's network. The
    detail goes to the operator's log."""
    if isinstance(exc, EgressRefused):
        return "refused by the egress fence (not a public address)"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "DNS lookup failed"
    if isinstance(exc, aiohttp.ClientSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.InvalidURL | ValueError):
        return "invalid URL"
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    return "could not reach the endpoint"


async def enqueue(
    conn: db.Connection,
    channel: Channel,
    events: list[RecordedEvent],
    queued: asyncio.Event | None = None,
) -> None:
    """The subscription's batch handler: the channel's requests for these events, queued."""
    rows = await channel.queue(conn, events)
    if rows:
        await conn.executemany(
            "INSERT INTO delivery_queue (channel, oid, position, subject, event_id, body)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            [(channel.name, *row) for row in rows],
        )
        if queued is not None:
            queued.set()


async def deliver(
    pool: db.Pool,
    channel: Channel,
    delivery: Delivery,
    *,
    retry_after_s: float = RETRY_AFTER_S,
    budget_s: float = ORG_BUDGET_S,
) -> int:
    """One pass over the channel's queue: each org that is due (never failed, or failed over
    `retry_after_s` ago) gets its oldest requests delivered, each subject's in order, until one
    fails or its budget is spent; returns how many went through. Orgs go one after another; an
    org's requests are sent with no transaction open."""
    async with pool.acquire() as conn:
        await channel.flush(conn)
        oids = [
            r[0]
            for r in await conn.fetch(
                "SELECT oid FROM delivery_queue WHERE channel = $1 GROUP BY oid"
                " HAVING max(last_attempt_at) IS NULL"
                " OR max(last_attempt_at) <= now() - make_interval(secs => $2) ORDER BY oid",
                channel.name,
                retry_after_s,
            )
        ]
        targets = await channel.targets(conn, oids)
        keys = await signing_keys(conn, targets)
        targets = {oid: t._replace(signing=tuple(keys[oid])) for oid, t in targets.items()}
    delivered = 0
    for oid in oids:
        delivered += await _deliver_org(pool, channel, delivery, oid, targets.get(oid), budget_s)
    async with pool.acquire() as conn:
        waiting = await conn.fetchval("SELECT count(*) FROM delivery_queue WHERE channel = $1", channel.name)
    metrics.DELIVERY_BACKLOG.labels(channel.name).set(waiting)
    return delivered


async def _deliver_org(
    pool: db.Pool, channel: Channel, delivery: Delivery, oid: str, target: Target | None, budget_s: float
) -> int:
    key = f"{channel.name}:{oid}"
    async with pool.acquire() as conn:
        # A session lock (no transaction stays open): another replica skips this org meanwhile.
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", locks.DELIVERIES, key):
            return 0
        try:
            if target is None:
                dropped = await conn.execute(
                    "DELETE FROM delivery_queue WHERE channel = $1 AND oid = $2", channel.name, oid
                )
                log.warning(
                    "%s deliveries of %s dropped (%s): no target any more", channel.name, oid, dropped
                )
                return 0
            rows = await conn.fetch(
                "SELECT oid, position, subject, event_id, body FROM delivery_queue"
                " WHERE channel = $1 AND oid = $2 ORDER BY position, subject LIMIT $3",
                channel.name,
                oid,
                PASS_ROWS,
            )
            queued = [Queued(*r) for r in rows]
            return await _send(conn, channel, delivery, target, queued, budget_s)
        finally:
            with contextlib.suppress(*UNAVAILABLE):
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", locks.DELIVERIES, key)


async def _send(
    conn: db.Connection,
    channel: Channel,
    delivery: Delivery,
    target: Target,
    rows: list[Queued],
    budget_s: float,
) -> int:
    """Each subject's requests in order, up to PER_ORG subjects at a time (one request per round
    trip would cap an org near 1/RTT). From the first failure, or once the budget is spent, the
    org's remaining requests stay queued. The bookkeeping after each one is one short statement."""
    deadline = asyncio.get_running_loop().time() + budget_s
    slots, book = asyncio.Semaphore(PER_ORG), asyncio.Lock()  # one connection: one statement at a time
    sent, failed = 0, False
    where = "channel = $1 AND oid = $2 AND position = $3 AND subject = $4"

    async def subject(stream: list[Queued]) -> None:
        nonlocal sent, failed
        for row in stream:
            key = (channel.name, row.oid, row.position, row.subject)
            async with slots:
                if failed or (sent and asyncio.get_running_loop().time() > deadline):  # one always goes
                    return
                outcome = await channel.send(delivery, target, row)
            metrics.DELIVERIES.labels(channel.name, _outcome(outcome)).inc()
            log.debug(
                "%s delivery: %s",
                channel.name,
                _outcome(outcome),
                extra={"channel": channel.name, "event_id": str(row.event_id), "position": row.position},
            )
            async with book:
                if outcome.done:
                    await conn.execute(f"DELETE FROM delivery_queue WHERE {where}", *key)
                    if outcome.error is not None:
                        await conn.execute(
                            "INSERT INTO delivery_refusals AS r (channel, oid, refused, last_refusal)"
                            " VALUES ($1, $2, 1, $3) ON CONFLICT (channel, oid) DO UPDATE"
                            " SET refused = r.refused + 1, last_refusal = $3, last_refused_at = now()",
                            channel.name,
                            row.oid,
                            outcome.error,
                        )
                    sent += outcome.error is None
                    continue
                failed = True
                log.warning(
                    "%s delivery of %s failed (%s); the org's wait",
                    channel.name,
                    row.oid,
                    outcome.error,
                    extra={"channel": channel.name, "event_id": str(row.event_id), "position": row.position},
                )
                await conn.execute(
                    "UPDATE delivery_queue SET attempts = attempts + $5, last_error = $6,"
                    " last_attempt_at = now(), first_failed_at = coalesce(first_failed_at, now())"
                    f" WHERE {where}",
                    *key,
                    ATTEMPTS,
                    outcome.error,
                )
                return

    streams: dict[str, list[Queued]] = {}
    for row in rows:
        streams.setdefault(row.subject, []).append(row)
    await asyncio.gather(*(subject(stream) for stream in streams.values()))
    return sent


def signed(request: Request, target: Target) -> Request:
    """The request with its signature over the exact body, made now (receivers check the time)."""
    if target.signing:
        request.headers[HEADER] = sign(request.body, target.signing, int(time.time()))
    return request


def _outcome(outcome: Outcome) -> str:
    if outcome.done:
        return "delivered" if outcome.error is None else "refused"
    return "failed"


async def run_deliveries(
    pool: db.Pool,
    stop: asyncio.Event,
    channels: list[Channel],
    fence: Fence,
    every_s: float = 1.0,
    database: str = "home",
) -> None:
    """Each channel's subscription (queues) and deliverer (sends, behind the egress fence), until
    `stop` is set."""
    async with fenced_session(fence) as session, asyncio.TaskGroup() as tg:
        delivery = Delivery(session, fence=fence)
        for channel in channels:
            queued = asyncio.Event()
            tg.create_task(_deliverer(pool, channel, delivery, queued, stop, every_s))
            tg.create_task(
                run_subscription(
                    pool,
                    channel.checkpoint,
                    _enqueuing(channel, queued),
                    stop=stop,
                    limit=500,
                    orgs=channel.orgs,
                    database=database,
                )
            )


def _enqueuing(channel: Channel, queued: asyncio.Event) -> BatchHandler:
    async def handle(conn: db.Connection, events: list[RecordedEvent]) -> None:
        await enqueue(conn, channel, events, queued)

    return handle


async def _deliverer(
    pool: db.Pool,
    channel: Channel,
    delivery: Delivery,
    queued: asyncio.Event,
    stop: asyncio.Event,
    every_s: float,
) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(queued.wait(), every_s)
        queued.clear()
        try:
            await deliver(pool, channel, delivery)
        except UNAVAILABLE as exc:  # the next pass tries again
            log.warning("%s: delivery pass failed: %s", channel.name, describe(exc))
