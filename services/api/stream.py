"""Live ticket events for the console and other clients: `GET /api/v1/stream?oids=` as server-sent
events, each the `ticket-events` message of one event, with its log position as the event id.

One follower of the log per API process (the Feed: woken when the tickets projection commits a
batch, one read per wake whatever the number of clients) hands each ticket event to every open
stream of its org, framed once and written to each stream in one write per read. It follows the
tickets projection, not the log's head: an event is sent once the read model shows it, so a
console that loads its queue on an event finds the row there. A stream
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

from projections.tickets import TicketsProjection
from services.api.auth import PRINCIPAL
from services.api.context import POOL, REVOCATIONS
from services.api.errors import ApiError, invalid
from services.api.params import csv
from services.eventstore import db
from services.eventstore.postgres import RecordedEvent, read_all
from services.eventstore.subscription import CHECKPOINT_CHANNEL, checkpoint
from services.kafka.messages import NOT_TICKET_EVENTS, encode_message, to_message
from services.outages import describe

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
QUEUED_MAX = 5_000  # events one stream may have waiting; past that it is reset
CATCH_UP_MAX = 50_000  # positions a resuming stream may read back; further back, it is reset
READ_BATCH = 1_000
RETRY_MS = 2_000  # what a browser's EventSource waits before reconnecting
SEND_TIMEOUT_S = 30.0  # a client that takes none of a write this long is cut off


@dataclass(eq=False)
class Listener:
    """One open stream: its orgs, and the frames the feed handed it since it last wrote."""

    oids: frozenset[str]
    joined_at: int  # the feed's position when it joined: later events come through `pending`
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False

    def offer(self, position: int, frame: bytes) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= QUEUED_MAX:
            self.end()
            return
        self.pending.append((position, frame))
        self.ready.set()

    def end(self) -> None:
        """What waits is dropped and the stream is woken to reset (its client reloads)."""
        self.overflowed = True
        self.pending.clear()
        self.ready.set()

    def take(self) -> list[tuple[int, bytes]] | None:
        """Everything waiting, to be written at once (one write per feed read, not per event);
        None once the stream must reset."""
        self.ready.clear()
        if self.overflowed:
            return None
        taken, self.pending = self.pending, []
        return taken


def frame(position: int, data: bytes) -> bytes:
    """An event's SSE frame, built once whatever the number of streams it goes to (a ticket-events
    message is one line of JSON: no data line to split)."""
    return b"id: %d\nevent: ticket\ndata: %s\n\n" % (position, data)


class Feed:
    def __init__(self, pool: db.Pool, ticket_url_template: str | None, max_per_principal: int) -> None:
        self.pool = pool
        self.ticket_url_template = ticket_url_template
        self.max_per_principal = max_per_principal
        self.position = 0
        self.started = asyncio.Event()
        self.listeners: dict[str, set[Listener]] = {}  # per org, the streams that follow it
        self.open_per_principal: Counter[str] = Counter()

    @contextlib.contextmanager
    def join(self, principal: str, oids: frozenset[str]) -> Iterator[Listener]:
        if self.open_per_principal[principal] >= self.max_per_principal:
            raise ApiError(429, f"at most {self.max_per_principal} open streams per token")
        listener = Listener(oids, self.position)
        for oid in oids:
            self.listeners.setdefault(oid, set()).add(listener)
        self.open_per_principal[principal] += 1
        try:
            yield listener
        finally:
            for oid in oids:
                following = self.listeners[oid]
                following.discard(listener)
                if not following:
                    del self.listeners[oid]
            self.open_per_principal[principal] -= 1

    def close(self) -> None:
        """At shutdown: every stream ends (its client reconnects to another API process)."""
        for following in self.listeners.values():
            for listener in following:
                listener.end()

    def frame(self, e: RecordedEvent) -> bytes:
        """What a stream sends of an event: its ticket-events message, framed."""
        return frame(e.position, encode_message(to_message(e, self.ticket_url_template)))

    def _dispatch(self, events: list[RecordedEvent]) -> None:
        """Each ticket event to the streams of its org, then the position: no await between them,
        so a stream joining meanwhile sees each event exactly once (queue or catch-up)."""
        for e in events:
            oid = e.metadata.get("oid")
            if e.type in NOT_TICKET_EVENTS or not isinstance(oid, str):
                continue
            receivers = self.listeners.get(oid)
            if receivers:
                data = self.frame(e)
                for x in receivers:
                    x.offer(e.position, data)
        self.position = events[-1].position

    async def run(self, stop: asyncio.Event, idle_poll_s: float = 1.0) -> None:
        """Follow the log from the tickets projection's position at start, as far as the projection
        has gone, until `stop`; a lost database is waited out."""
        while not stop.is_set():
            try:
                await self._follow(stop, idle_poll_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("stream feed: %s; following again in 1 s", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async def _follow(self, stop: asyncio.Event, idle_poll_s: float) -> None:
        wake = asyncio.Event()
        followed = TicketsProjection.name

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            if payload == followed:
                wake.set()

        async with self.pool.acquire() as listener:
            if not self.started.is_set():
                self.position = await checkpoint(listener, followed)
                self.started.set()
            await listener.add_listener(CHECKPOINT_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    async with self.pool.acquire() as conn:
                        projected = await checkpoint(conn, followed)
                        events = (
                            await read_all(conn, self.position, min(READ_BATCH, projected - self.position))
                            if projected > self.position
                            else []
                        )
                    if events:
                        self._dispatch(events)
                        continue
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), idle_poll_s)
            finally:
                with contextlib.suppress(Exception):
                    await listener.remove_listener(CHECKPOINT_CHANNEL, on_notify)


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
            caught_up = await _catch_up(request, sse, oids, sent, listener.joined_at)
            if caught_up is not None:
                revocations = request.app[REVOCATIONS]
                await _live(request, sse, listener, caught_up, lambda: revocations.revoked(who.token_id))
    return sse


async def _write(request: web.Request, sse: EventSourceResponse, frames: list[bytes]) -> bool:
    """Frames in one write; False once the client is gone or stalled (a stalled one is cut off,
    as aiohttp-sse does for its own sends: a graceful close would wait on it forever)."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await sse.write(b"".join(frames))
    except TimeoutError:
        sse.stop_streaming()
        if request.transport is not None:
            request.transport.abort()
        return False
    except (ConnectionResetError, RuntimeError):  # RuntimeError: written after the end
        sse.stop_streaming()
        return False
    return True


async def _catch_up(
    request: web.Request, sse: EventSourceResponse, oids: frozenset[str], after: int, until: int
) -> int | None:
    """What a resuming stream missed, read from the store; None if the client went meanwhile."""
    feed = request.app[FEED]
    while after < until:
        async with request.app[POOL].acquire() as conn:
            events = await read_all(conn, after, min(READ_BATCH, until - after))
        if not events:
            break
        frames = [
            feed.frame(e) for e in events if e.type not in NOT_TICKET_EVENTS and e.metadata.get("oid") in oids
        ]
        if frames and not await _write(request, sse, frames):
            return None
        after = events[-1].position
    return after


async def _live(
    request: web.Request,
    sse: EventSourceResponse,
    listener: Listener,
    sent: int,
    revoked: Callable[[], Awaitable[bool]],
) -> None:
    """The feed's events after `sent`, until the client goes, the stream is reset, or its token is
    revoked (checked while the stream is idle too, every heartbeat)."""
    closed = asyncio.create_task(sse.wait())
    waiter: asyncio.Task[bool] | None = None
    try:
        while not closed.done():
            waiter = waiter or asyncio.create_task(listener.ready.wait())
            await asyncio.wait({waiter, closed}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
            if await revoked():
                await sse.send("{}", event="revoked")
                return
            if closed.done():
                return
            if not waiter.done():
                continue
            waiter = None
            taken = listener.take()
            if taken is None:  # overflowed, or the process is stopping
                await sse.send("{}", event="reset", retry=RETRY_MS)
                return
            frames = [data for position, data in taken if position > sent]
            if frames:
                if not await _write(request, sse, frames):
                    return
                sent = taken[-1][0]
    finally:
        closed.cancel()
        if waiter is not None:
            waiter.cancel()
