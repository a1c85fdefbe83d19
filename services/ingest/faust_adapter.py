"""Everything the ingest worker does with faust-streaming's and aiokafka's internals, in one place.

faust's public API leaves no room for what this worker needs, so a few of its internals are used
or replaced here, and nowhere else: `check_versions` refuses versions they were not written for,
and `INTERNALS` names every attribute relied on, which a test checks still exists.

- The transport's consumer hands a partition's fetch to the ingest's batches in one call, past
  the conductor and the stream (`EagerConsumer._drain_messages`, `take_batches`, `accepted`):
  per message that path cost more than everything the worker does with a detection but store it
  (faust's ceiling on this machine: 39k messages/s through it, 108k without; docs/benchmarks.md).
  What faust's loop does per message is kept (read offsets, gaps, the flow and generation checks,
  unacked tracking), and a topic without a batch sink still goes message by message.
- Otherwise the consumer hands each message to the streams without a task (`EagerConsumer`).
- What faust does per message that this worker has no use for costs nothing (`BytesSchema`,
  `UncountedMonitor`, `SettledBuffer`, `delivered`).
- A stop does not wait for every fetched detection to be written (`StoppableApp`).
- The consumer's fetch wait is capped (`CappedFetchThread`), for this app's consumer only.
- The worker starts without faust's command line (`start_worker`).

The eager consumer: a faust Kafka transport whose consumer hands each message to the streams
without a task.

faust's drain loop delivers every fetched message with
`wait_first(callback(message), suspend_flow.wait())`: four tasks and an `asyncio.wait` per
message, so that a delivery blocked on a full stream buffer can be abandoned when a rebalance
suspends the flow. That bookkeeping was most of faust's cost here (a count-only agent: 6.7k
messages/s; with this consumer 16k). Almost every delivery completes without blocking, so the
callback's first step runs at once, as Python 3.12's eager tasks do; only a delivery that really
has to wait (full buffer, flow suspended, a lock held) becomes a task and goes through faust's
own `wait_first`, with the same outcome as before.

The per-message work: what faust does for every message that this worker has no use for, made
to cost nothing.

The worker's event loop is its bottleneck. Per message faust decodes key and value through its
codec registry (the raw serializer returns the bytes it was given), counts it for a web view this
worker does not serve, reads settings that `app.conf` tracks on every read, and walks its own
per-event iterator. None of it is needed here; what each cost is in docs/benchmarks.md.
"""

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from importlib.metadata import version
from typing import Any, cast

import aiokafka
import faust
from faust.cli.base import prepare_app
from faust.sensors import Monitor
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import AppT, ChannelT, EventT, StreamT
from faust.types.tuples import TP, Message
from mode.services import WaitResults
from mode.threads import ServiceThread
from mode.utils.loops import get_event_loop

# What the drain loop hands a partition's fetched messages to (`take_batches`).
BatchSink = Callable[[list[Message]], Awaitable[None]]

# The versions these internals were read from, [lowest, past the highest) (pyproject.toml pins the
# same ranges).
SUPPORTED = {"faust-streaming": ((0, 15, 3), (0, 16)), "aiokafka": ((0, 14), (0, 15))}


def release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Refuse to run on versions whose internals were not read (a `pip install -U` would otherwise
    fail somewhere inside faust, or worse, not fail)."""
    for package, (lowest, past) in SUPPORTED.items():
        found = (installed or {}).get(package) or version(package)
        if not lowest <= release(found) < past:
            raise RuntimeError(
                f"{package} {found} is installed; the ingest worker's faust adapter supports"
                f" >={'.'.join(map(str, lowest))},<{'.'.join(map(str, past))}"
            )


class BytesSchema(faust.Schema[bytes, bytes]):
    """Keys and values stay the bytes the broker delivered: the batch parses them (and dead-letters
    what it cannot read), so there is nothing to decode here."""

    def compile(self, app: AppT, **kwargs: Any) -> Any:
        event_class: Any = app.conf.Event  # read once: faust's decode asks for it per message

        async def decode(message: Message, *, propagate: bool = False) -> EventT[bytes]:
            return cast(EventT[bytes], event_class(app, message.key, message.value, message.headers, message))

        return decode


class UncountedMonitor(Monitor):
    """faust's Monitor without its per-message counters and timings (rebalances, commits and sends
    are still recorded); they feed only faust's web view."""

    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: StreamT[Any], event: EventT[Any]) -> None:
        return None

    def on_stream_event_out(
        self,
        tp: TP,
        offset: int,
        stream: StreamT[Any],
        event: EventT[Any],
        state: dict[Any, Any] | None = None,
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        return None


class SettledBuffer(ProducerBuffer):
    """faust's producer buffer, whose size (asked before every delivered message) tells threaded
    from not by the threaded producer its producer attached (only when `producer_threaded` is
    set), not by a settings lookup each time."""

    threaded_producer: ServiceThread | None = None  # faust assigns one on the instance when the setting is on

    @property
    def size(self) -> int:
        if self.threaded_producer is not None:
            return len(self.queue._queue) if self.queue else 0  # type: ignore[attr-defined]
        pending: asyncio.Queue[Any] = self.pending
        return len(pending._queue)  # type: ignore[attr-defined]


class SettledProducer(faust_aiokafka.Producer):
    """faust's aiokafka producer with a `SettledBuffer` (its __init__ names the buffer class, so
    the buffer it built becomes one before anything uses it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffer.__class__ = SettledBuffer


async def delivered(stream: StreamT[Any], most: int) -> AsyncIterator[list[EventT[Any]]]:
    """The events delivered to a stream whose acks are manual, up to `most` at a time, taken from
    its channel's queue in one go.

    faust's stream iterator spends an event-loop turn (`await sleep(0)`) and two async-generator
    hops on every event. This keeps what that iterator does for a manual-ack stream with no
    processors: it drops events fetched before the latest rebalance (the flow suspended, or an
    older consumer generation: their partitions may now be another worker's, and their offsets
    will be fetched again), it marks each message as unacked so that commits and rebalances wait
    for it, errors thrown into the channel are raised here, and the queue's own `get` still signals
    the fetcher when the buffer drains. It drops the per-event sensor calls and `current_event`,
    which this worker does not use.
    """
    app, queue = stream.app, cast(ChannelT[Any], stream.channel).queue
    acking, unacked, flow = app.topics.acking_topics, app.consumer.unacked, app.flow_control
    started = await stream.maybe_start()
    try:
        while not stream.should_stop:
            try:
                taken = [await queue.get()]
            except StopAsyncIteration:  # faust ends the channel so on stop: the stream is over
                return
            while len(taken) < most and not queue.empty():
                taken.append(queue.get_nowait())
            events = []
            for event in taken:
                message = event.message
                if not flow.is_active() or message.generation_id != app.consumer_generation_id:
                    continue
                if message.topic in acking and not message.tracked:
                    message.tracked = True
                    unacked.add(message)
                events.append(event)
            if events:
                yield events
    finally:
        if started:
            await stream.stop()


def accepted(app: AppT, messages: list[Message]) -> list[Message]:
    """A fetch's messages (never none) a batch sink was handed, as `delivered` takes events: none
    fetched before the latest rebalance, and the rest held (a reference, as the conductor's
    delivery takes) and tracked as unacked, so that commits and rebalances wait for them."""
    if not app.flow_control.is_active():
        return []
    if messages[0].generation_id != app.consumer_generation_id:  # one fetch: one generation
        return []
    acking, unacked = app.topics.acking_topics, app.consumer.unacked
    for message in messages:
        message.incref()
        if message.topic in acking and not message.tracked:
            message.tracked = True
            unacked.add(message)
    return messages


def take_batches(stream: StreamT[Any], sink: BatchSink) -> None:
    """Hand the stream's topics' fetched messages to `sink`, a partition's fetch at a time, past
    the conductor and the stream (`EagerConsumer._drain_messages`); where the app's consumer is
    not this adapter's, nothing changes (the stream delivers them)."""
    consumer = stream.app.consumer
    if isinstance(consumer, EagerConsumer):
        for topic in cast(Any, stream.channel).topics:
            consumer.batch_sinks[topic] = sink


class _Started:
    """The rest of a coroutine whose first step has already run and yielded `pending`."""

    __slots__ = ("_coro", "_pending")

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self._coro, self._pending = coro, pending

    def __await__(self) -> Generator[Any, None, Any]:
        coro, pending = self._coro, self._pending
        while True:
            try:
                yield pending  # the driving task waits on it, exactly as for the coroutine itself
            except BaseException as exc:  # cancellation and the like go into the coroutine
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(None)
                except StopIteration as stop:
                    return stop.value


class CappedFetchThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust builds its consumer with fetch_max_wait_ms=1500 and offers no setting for it; a broker
    that holds a fetch for the whole wait then adds up to 1.5 s to every detection's latency. This
    caps it at the transport's `fetch_max_wait_ms` for this app's consumer (infra-notes: at least
    50 ms), before the consumer starts and builds its fetcher with it."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = min(consumer._fetch_max_wait_ms, transport.fetch_max_wait_ms)
        return consumer


class EagerConsumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_sinks: dict[str, BatchSink] = {}

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CappedFetchThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        """faust's drain loop, handing each partition's fetched messages to its topic's batch
        sink in one call where one is set (`take_batches`), instead of one conductor delivery per
        message. What faust's loop does per message is kept: the read offset, offsets skipped
        (gaps, so that commits pass them), the generation and flow checks before a delivery, and a
        delivery blocked when the flow is suspended is abandoned. Topics without a sink go message
        by message as in faust."""
        if not self.batch_sinks:
            await super()._drain_messages(fetcher)
            return
        app, read_offset = self.app, self._read_offset
        consumer_should_stop, fetcher_should_stop = self._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:  # faust's getmany: seek back to the committed offsets
                    try:
                        await self.perform_seek()
                    except Exception as exc:  # logged and left, as faust does
                        self.log.warning(f"exception performing seek when flow not active {exc}")
                    continue
                generation = app.consumer_generation_id
                for tp, fetched in records.items():
                    if not self.flow_active or app.consumer_generation_id != generation:
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    app.monitor.track_tp_end_offset(tp, self.highwater(tp))
                    messages = await self._unread(tp, fetched)
                    if not messages:
                        continue
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    sink = self.batch_sinks.get(tp.topic)
                    if sink is None:
                        for message in messages:
                            await self.wait_first(self.callback(message), self.suspend_flow.wait())
                            read_offset[tp] = message.offset
                    else:
                        await self.wait_first(sink(messages), self.suspend_flow.wait())
                        read_offset[tp] = messages[-1].offset
                self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)

    async def _unread(self, tp: Any, fetched: list[Any]) -> list[Message]:
        """A partition's fetched records from its read offset on, as faust's loop takes them; the
        offsets skipped become gaps (where the topic acks), which commits pass."""
        messages: list[Message] = []
        last = self._read_offset[tp]
        gaps = self.app.topics.acks_enabled_for(tp.topic)
        for record in fetched:
            offset = record.offset
            if last is None or offset >= last:
                if gaps and last and offset - last > 1:
                    await self._add_gap(tp, last + 1, offset)
                messages.append(self._to_message(tp, record))
                last = offset
        return messages

    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109 (mode's signature)
        first = coros[0]
        if (
            not asyncio.iscoroutine(first)
            or self.suspend_flow.is_set()
            or self.should_stop
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        try:
            pending = first.send(None)
        except StopIteration as stop:
            _close(coros[1:])
            return WaitResults([first], [stop.value], False)
        except BaseException:
            _close(coros[1:])
            raise
        return await super().wait_first(_Started(first, pending), *coros[1:], timeout=timeout)


class EagerTransport(faust_aiokafka.Transport):
    Consumer = EagerConsumer
    Producer = SettledProducer
    fetch_max_wait_ms: int = 1500  # faust's own


def use_transport(app: faust.App, fetch_max_wait_ms: int = 1500) -> None:
    """The eager consumer, with its fetch wait capped, and the settled producer. Must run before
    anything touches `app.transport` (declaring a topic does)."""
    transport = EagerTransport(app.conf.broker_consumer, app)
    transport.fetch_max_wait_ms = fetch_max_wait_ms
    app.transport = transport


def _close(coros: tuple[Any, ...]) -> None:
    for coro in coros:
        if asyncio.iscoroutine(coro):
            coro.close()  # never started: closing avoids the "never awaited" warning


class StoppableApp(faust.App):
    """On stop, faust waits until every fetched detection is acked: with the database away that
    wait has no end, and the worker never leaves its group. Here a stop commits what was acked and
    cancels the batch in flight (rolled back, never acked, so redelivered to whoever takes the
    partition). A rebalance still waits, so no partition is ever written by two workers at once."""

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        if self.should_stop:
            return
        await super()._consumer_wait_empty(consumer, logger)


def start_worker(app: faust.App, loglevel: str) -> None:
    """Run the app in a faust Worker in this process until it stops, as `faust worker` would but
    without its command line (nothing of this process's argv is read or rewritten)."""
    prepare_app(app, None)
    worker = faust.Worker(app, quiet=True, loglevel=loglevel, loop=get_event_loop(), redirect_stdouts=True)
    worker.execute_from_commandline()


# Every internal attribute the adapter relies on: (owner, attribute); a test checks each exists.
INTERNALS: tuple[tuple[Any, str], ...] = (
    *(
        (faust_aiokafka.Consumer, a)
        for a in (
            "wait_first",
            "suspend_flow",
            "_crashed",
            "_new_consumer_thread",
            "unacked",
            "_drain_messages",
            "_wait_next_records",
            "_read_offset",
            "_add_gap",
            "_to_message",
            "_commit_every",
            "_n_acked",
            "_buffered_partitions",
            "_stopped",
            "flow_active",
            "perform_seek",
            "highwater",
            "callback",
            "diag",
            "consumer_stopped_errors",
        )
    ),
    (faust.App, "_consumer_wait_empty"),
    (faust.App, "consumer_generation_id"),
    (faust.App, "flow_control"),
    (faust_consumer, "CONSUMER_FETCHING"),
    (Monitor, "track_tp_end_offset"),
    (faust.Topic, "topics"),
    (Message, "incref"),
    (Message, "ack"),
    (faust_aiokafka.AIOKafkaConsumerThread, "_create_worker_consumer"),
    (faust_aiokafka.Transport, "Consumer"),
    (faust_aiokafka.Transport, "Producer"),
    (faust_aiokafka.Producer, "buffer"),
    (ProducerBuffer, "size"),
    (ProducerBuffer, "pending"),
    (ProducerBuffer, "queue"),
    (aiokafka.AIOKafkaConsumer, "_fetch_max_wait_ms"),
    (Message, "generation_id"),
    (Message, "tracked"),
)
