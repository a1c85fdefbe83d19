"""Live ticket events for the console and other clients: `GET /api/v1/stream?oids=` as server-sent
events, each the `ticket-events` message of one event, with its log position as the event id.

One follower of the log per API process (the Feed: woken by the store's NOTIFY, one read per wake
whatever the number of clients) hands each ticket event to every open stream of its org. A stream
that resumes (`Last-Event-ID`, the last position it received) first reads what it missed from the
store, up to the position the feed had reached when the stream joined it, then takes the feed's
events after that: nothing missed, nothing twice (positions are gap-free and in commit order).
A stream that falls too far behind gets `event: reset` and is closed: the client reloads.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from services.api.auth import PRINCIPAL
from services.api.context import POOL, REVOCATIONS
from services.api.errors import ApiError, invalid
from services.api.params import csv
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent, head_position, read_all
from services.eventstore.subscription import NOTIFY_CHANNEL
from services.kafka.messages import NOT_TICKET_EVENTS, encode_message, to_message
from services.outages import describe

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
QUEUED_MAX = 5_000  # events one stream may have waiting; past that it is reset
CATCH_UP_MAX = 50_000  # positions a resuming stream may read back; further back, it is reset
READ_BATCH = 1_000
RETRY_MS = 2_000  # what a browser's EventSource waits before reconnecting


@dataclass(eq=False)
class Listener:
    """One open stream: its orgs, and the events the feed handed it."""

    oids: frozenset[str]
    joined_at: int  # the feed's position when it joined: later events come through the queue
    queue: asyncio.Queue[tuple[int, str] | None] = field(default_factory=lambda: asyncio.Queue(QUEUED_MAX))
    overflowed: bool = False

    def offer(self, position: int, data: str) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait((position, data))
        except asyncio.QueueFull:
            self.end()

    def end(self) -> None:
        """What waits is dropped and the stream is woken to reset (its client reloads)."""
        self.overflowed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Feed:
    def __init__(self, pool: db.Pool, ticket_url_template: str | None, max_per_principal: int) -> None:
        self.pool = pool
        self.ticket_url_template = ticket_url_template
        self.max_per_principal = max_per_principal
        self.position = 0
        self.started = asyncio.Event()
        self.listeners: set[Listener] = set()
        self.open_per_principal: Counter[str] = Counter()

    @contextlib.contextmanager
    def join(self, principal: str, oids: frozenset[str]) -> Iterator[Listener]:
        if self.open_per_principal[principal] >= self.max_per_principal:
            raise ApiError(429, f"at most {self.max_per_principal} open streams per token")
        listener = Listener(oids, self.position)
        self.listeners.add(listener)
        self.open_per_principal[principal] += 1
        try:
            yield listener
        finally:
            self.listeners.discard(listener)
            self.open_per_principal[principal] -= 1

    def close(self) -> None:
        """At shutdown: every stream ends (its client reconnects to another API process)."""
        for listener in self.listeners:
            listener.end()

    def message(self, e: RecordedEvent) -> str:
        """What a stream sends of an event: its ticket-events message."""
        return encode_message(to_message(e, self.ticket_url_template)).decode()

    def _dispatch(self, events: list[RecordedEvent]) -> None:
        """Each ticket event to the streams of its org, then the position: no await between them,
        so a stream joining meanwhile sees each event exactly once (queue or catch-up)."""
        for e in events:
            oid = e.metadata.get("oid")
            if e.type in NOT_TICKET_EVENTS or not isinstance(oid, str):
                continue
            receivers = [x for x in self.listeners if oid in x.oids]
            if receivers:
                data = self.message(e)
                for x in receivers:
                    x.offer(e.position, data)
        self.position = events[-1].position

    async def run(self, stop: asyncio.Event, idle_poll_s: float = 1.0) -> None:
        """Follow the log from its head at start, until `stop`; a lost database is waited out."""
        while not stop.is_set():
            try:
                await self._follow(stop, idle_poll_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("stream feed: %s; following again in 1 s", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _follow(self, stop: asyncio.Event, idle_poll_s: float) -> None:
        wake = asyncio.Event()

        def on_notify(*_: object) -> None:
            wake.set()

        async with self.pool.acquire() as listener:
            if not self.started.is_set():
                self.position = await head_position(listener)
                self.started.set()
            await listener.add_listener(NOTIFY_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    async with self.pool.acquire() as conn:
                        events = await read_all(conn, self.position, READ_BATCH)
                    if events:
                        self._dispatch(events)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), idle_poll_s)
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(NOTIFY_CHANNEL, on_notify)


FEED = web.AppKey("feed", Feed)


def feed_context(feed: Feed) -> Callable[[web.Application], AsyncIterator[None]]:
    """The feed runs while the app does (aiohttp's cleanup context)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        yield
        stop.set()
        feed.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return context


async def end_streams(app: web.Application) -> None:
    app[FEED].close()


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 19:
        raise invalid("Last-Event-ID", "Last-Event-ID is the position of the last event received (digits)")
    return int(raw)


async def stream(request: web.Request) -> web.StreamResponse:
    who = request[PRINCIPAL]
    oids = frozenset(csv(request.query, "oids", required=True))
    last = _last_event_id(request)
    feed = request.app[FEED]
    try:
        await asyncio.wait_for(feed.started.wait(), 10)
    except TimeoutError:  # the feed has not reached the database since the process started
        raise ApiError(503, "the live stream is not ready yet", headers={"Retry-After": "5"}) from None
    with feed.join(who.token_id or who.subject, oids) as listener:
        if last is not None and listener.joined_at - last > CATCH_UP_MAX:
            raise ApiError(410, "too far behind to resume: load the queue again")
        async with sse_response(
            request, ping_interval=HEARTBEAT_S, headers={"Cache-Control": "no-store"}
        ) as sse:
            # what the client has: up to its Last-Event-ID (possibly past this process's feed, if another
            # API process sent it), else what the feed had when it joined
            sent = listener.joined_at if last is None else last
            sent = await _catch_up(request.app[POOL], sse, oids, sent, listener.joined_at, feed)
            revocations = request.app[REVOCATIONS]
            await _live(sse, listener, sent, lambda: revocations.revoked(who.token_id))
    return sse


async def _catch_up(
    pool: db.Pool, sse: EventSourceResponse, oids: frozenset[str], after: int, until: int, feed: Feed
) -> int:
    while after < until:
        async with pool.acquire() as conn:
            events = await read_all(conn, after, min(READ_BATCH, until - after))
        if not events:
            break
        for e in events:
            oid = e.metadata.get("oid")
            if e.type not in NOT_TICKET_EVENTS and isinstance(oid, str) and oid in oids:
                await sse.send(feed.message(e), id=str(e.position), event="ticket")
        after = events[-1].position
    return after


async def _live(
    sse: EventSourceResponse, listener: Listener, sent: int, revoked: Callable[[], Awaitable[bool]]
) -> None:
    """The feed's events after `sent`, until the client goes, the stream is reset, or its token is
    revoked (checked while the stream is idle too, every heartbeat)."""
    closed = asyncio.create_task(sse.wait())
    getter: asyncio.Task[tuple[int, str] | None] | None = None
    try:
        while not closed.done():
            getter = getter or asyncio.create_task(listener.queue.get())
            await asyncio.wait({getter, closed}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if await revoked():
                await sse.send("{}", event="revoked")
                return
            if closed.done():
                return
            if not getter.done():
                continue
            item, getter = getter.result(), None
            if item is None:  # overflowed, or the process is stopping
                await sse.send("{}", event="reset", retry=RETRY_MS)
                return
            position, data = item
            if position <= sent:
                continue
            await sse.send(data, id=str(position), event="ticket")
            sent = position
    finally:
        closed.cancel()
        if getter is not None:
            getter.cancel()
