"""Live ticket events for the console and other clients: `GET /api/v1/stream?oids=` as server-sent
events, each the `ticket-events` message of one event, with the log positions as the event id:
the position reached in each shard of the log, dot-separated (with one shard, the default, the
event's position itself).

One follower of the log per API process (the Feed: woken when the tickets projection commits a
batch, one read per wake whatever the number of clients) hands each ticket event to every open
stream of its org, framed once and written to each stream in one write per read. It follows the
tickets projection, not the log's head: an event is sent once the read model shows it, so a
console that loads its queue on an event finds the row there. A stream
that resumes (`Last-Event-ID`, the last id it received) first reads what it missed from the
store, shard by shard, up to the positions the feed had reached when the stream joined it, then
takes the feed's events after those: nothing missed, nothing twice (within a shard, positions are
gap-free and in commit order; a ticket's events are all in one shard).
A stream that falls too far behind gets `event: reset` and is closed: the client reloads.
"""

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from projections.tickets import TicketsProjection
from services.api.auth import PRINCIPAL
from services.api.context import REVOCATIONS
from services.api.errors import ApiError, invalid
from services.api.params import csv
from services.eventstore import db
from services.eventstore.placement import LayoutMismatch, Placement
from services.eventstore.postgres import RecordedEvent, read_all
from services.eventstore.subscription import CHECKPOINT_CHANNEL, checkpoints
from services.kafka.messages import NOT_TICKET_EVENTS, encode_message, to_message
from services.outages import describe

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0  # a comment line this often keeps proxies from closing an idle stream
QUEUED_MAX = 5_000  # events one stream may have waiting; past that it is reset
CATCH_UP_MAX = (
    50_000  # positions a resuming stream may read back (summed over the shards); further back, reset
)
READ_BATCH = 1_000
RETRY_MS = 2_000  # what a browser's EventSource waits before reconnecting
SEND_TIMEOUT_S = 30.0  # a client that takes none of a write this long is cut off


Positions = tuple[int, ...]  # the position reached in each shard


def event_id(positions: Positions) -> bytes:
    return b".".join(b"%d" % p for p in positions)


class Pending(NamedTuple):
    """An event handed to a stream: its shard and position, the feed's positions with it (the
    frame's id), and the frame."""

    shard: int
    position: int
    positions: Positions
    frame: bytes


@dataclass(eq=False)
class Listener:
    """One open stream: its orgs, and the frames the feed handed it since it last wrote."""

    oids: frozenset[str]
    joined_at: Positions  # the feed's positions when it joined: later events come through `pending`
    pending: list[Pending] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False

    def offer(self, pending: Pending) -> None:
        if self.overflowed:
            return
        if len(self.pending) >= QUEUED_MAX:
            self.end()
            return
        self.pending.append(pending)
        self.ready.set()

    def end(self) -> None:
        """What waits is dropped and the stream is woken to reset (its client reloads)."""
        self.overflowed = True
        self.pending.clear()
        self.ready.set()

    def take(self) -> list[Pending] | None:
        """Everything waiting, to be written at once (one write per feed read, not per event);
        None once the stream must reset."""
        self.ready.clear()
        if self.overflowed:
            return None
        taken, self.pending = self.pending, []
        return taken


def frame(positions: Positions, data: bytes) -> bytes:
    """An event's SSE frame, built once whatever the number of streams it goes to (a ticket-events
    message is one line of JSON: no data line to split)."""
    return b"id: %s\nevent: ticket\ndata: %s\n\n" % (event_id(positions), data)


class Feed:
    """With orgs placed on several databases, one follower per database moves the positions of the
    shards it holds (an id's shard s is read from shard s's database); with one database, its
    follower moves every shard its layout has."""

    def __init__(self, placement: Placement, ticket_url_template: str | None, max_per_principal: int) -> None:
        self.placement = placement
        self.placed = len(placement.pools) > 1
        self.ticket_url_template = ticket_url_template
        self.max_per_principal = max_per_principal
        self.positions: Positions = (0,) * placement.shards if self.placed else (0,)
        self.followed: set[int] = set()  # (placed) the shards whose followers have their positions
        self.started = asyncio.Event()
        self.listeners: dict[str, set[Listener]] = {}  # per org, the streams that follow it
        self.open_per_principal: Counter[str] = Counter()

    @contextlib.contextmanager
    def join(self, principal: str, oids: frozenset[str]) -> Iterator[Listener]:
        if self.open_per_principal[principal] >= self.max_per_principal:
            raise ApiError(429, f"at most {self.max_per_principal} open streams per token")
        listener = Listener(oids, self.positions)
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

    def frame(self, positions: Positions, e: RecordedEvent) -> bytes:
        """What a stream sends of an event: its ticket-events message, framed with the positions
        a client that has it has reached."""
        return frame(positions, encode_message(to_message(e, self.ticket_url_template)))

    def _dispatch(self, shard: int, events: list[RecordedEvent]) -> None:
        """Each ticket event of a shard to the streams of its org, then the positions: no await
        between them, so a stream joining meanwhile sees each event exactly once (queue or
        catch-up)."""
        reached = list(self.positions)
        for e in events:
            oid = e.metadata.get("oid")
            reached[shard] = e.position
            if e.type in NOT_TICKET_EVENTS or not isinstance(oid, str):
                continue
            receivers = self.listeners.get(oid)
            if receivers:
                positions = tuple(reached)
                handed = Pending(shard, e.position, positions, self.frame(positions, e))
                for x in receivers:
                    x.offer(handed)
        self.positions = tuple(reached)

    def pool_of_shard(self, shard: int) -> db.Pool:
        return self.placement.by_shard[shard] if self.placed else self.placement.home

    async def run(self, stop: asyncio.Event, idle_poll_s: float = 1.0) -> None:
        """Follow the log from the tickets projection's position at start, as far as the projection
        has gone, until `stop`; a lost database is waited out."""
        async with asyncio.TaskGroup() as tg:
            for pool in self.placement.pools:
                held = {s for s, p in enumerate(self.placement.by_shard) if p is pool}
                if not self.placed or held:
                    tg.create_task(
                        self._run(pool, frozenset(held) if self.placed else None, stop, idle_poll_s)
                    )

    async def _run(
        self, pool: db.Pool, held: frozenset[int] | None, stop: asyncio.Event, idle_s: float
    ) -> None:
        while not stop.is_set():
            try:
                await self._follow(pool, held, stop, idle_s)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, LayoutMismatch) as exc:
                log.warning("stream feed: %s; following again in 1 s", describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    def _start(self, projected: list[int], held: frozenset[int] | None) -> None:
        """The positions the feed starts from: the projection's, in the shards this follower holds
        (None: every shard, of whatever layout the one database has)."""
        if held is None:
            if not self.started.is_set() or len(self.positions) != len(projected):
                if self.started.is_set():  # resharded: every stream resets (its id names the old shards)
                    self.close()
                self.positions = tuple(projected)
                self.started.set()
            return
        if len(projected) != len(self.positions):
            raise LayoutMismatch(
                f"a database has {len(projected)} shards, the placement {len(self.positions)}"
            )
        if not held <= self.followed:
            self.positions = tuple(projected[s] if s in held else p for s, p in enumerate(self.positions))
            self.followed |= held
            if len(self.followed) == len(self.positions):  # every database's follower has started
                self.started.set()

    async def _follow(
        self, pool: db.Pool, held: frozenset[int] | None, stop: asyncio.Event, idle_poll_s: float
    ) -> None:
        wake = asyncio.Event()
        followed = TicketsProjection.name

        def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            if payload == followed:
                wake.set()

        async with pool.acquire() as listener:
            self._start(await checkpoints(listener, followed), held)
            await listener.add_listener(CHECKPOINT_CHANNEL, on_notify)
            try:
                while not stop.is_set():
                    wake.clear()
                    read = 0
                    async with pool.acquire() as conn:
                        projected = await checkpoints(conn, followed)
                        if len(projected) != len(self.positions):
                            return  # (followed again, on the new layout)
                        for shard, (at, until) in enumerate(zip(self.positions, projected, strict=True)):
                            if held is not None and shard not in held:
                                continue
                            if until > at and (events := await read_all(conn, at, READ_BATCH, shard, until)):
                                self._dispatch(shard, events)
                                read += len(events)
                    if read:
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


def _last_event_id(request: web.Request) -> Positions | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None or raw == "":
        return None
    parts = raw.split(".")
    if len(parts) > 256 or not all(p.isdigit() and len(p) <= 19 for p in parts):
        raise invalid(
            "Last-Event-ID", "Last-Event-ID is the id of the last event received (positions: digits and dots)"
        )
    return tuple(int(p) for p in parts)


def _resumed_from(last: Positions, shards: int) -> Positions | None:
    """Where a client resumes: its id, of as many shards as the log has (`0` is the start on any
    layout); None for an id of another layout (the log was resharded: it reloads)."""
    if last == (0,):
        return (0,) * shards
    return last if len(last) == shards else None


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
        if last is not None:
            last = _resumed_from(last, len(listener.joined_at))
            if last is None:
                raise ApiError(410, "the log was resharded since that id: load the queue again")
            if sum(max(0, j - s) for j, s in zip(listener.joined_at, last, strict=True)) > CATCH_UP_MAX:
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
    request: web.Request, sse: EventSourceResponse, oids: frozenset[str], after: Positions, until: Positions
) -> Positions | None:
    """What a resuming stream missed, read from the store shard by shard; the positions reached,
    or None if the client went meanwhile."""
    feed = request.app[FEED]
    reached = list(after)
    for shard, end in enumerate(until):
        while reached[shard] < end:
            async with feed.pool_of_shard(shard).acquire() as conn:
                events = await read_all(conn, reached[shard], READ_BATCH, shard, end)
            if not events:
                break
            frames = []
            for e in events:
                reached[shard] = e.position
                if e.type not in NOT_TICKET_EVENTS and e.metadata.get("oid") in oids:
                    frames.append(feed.frame(tuple(reached), e))
            if frames and not await _write(request, sse, frames):
                return None
    return tuple(reached)


async def _live(
    request: web.Request,
    sse: EventSourceResponse,
    listener: Listener,
    sent: Positions,
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
            frames = []
            for shard, position, positions, data in taken:
                if position <= sent[shard]:  # (sent in the catch-up, or before by another API process)
                    continue
                # what the client has: the feed's positions with this event, or more in a shard
                # where it resumed ahead of this process's feed (its id must not go back there)
                reached = tuple(max(a, b) for a, b in zip(positions, sent, strict=True))
                if reached != positions:
                    data = b"id: " + event_id(reached) + data[data.index(b"\n") :]
                frames.append(data)
                sent = reached
            if frames and not await _write(request, sse, frames):
                return
    finally:
        closed.cancel()
        if waiter is not None:
            waiter.cancel()
