"""How every agent handles its events: in batches, pipelined, each event failing alone,
then the dead-letter topic.

An agent takes the events that have already arrived, up to ``max_batch``. A batch is
*prepared* (decoded, its rows computed, its derived events handed over) and then
*settled* by the processing guarantee's ``Settlement``: under at-least-once
(``AtLeastOnce``) the derived events are delivered first, then the rows' changelog
records, then the rows are stored and the events acknowledged, the order that makes a
replay safe (docs/guarantees.md, "The crash-safety protocol"); under exactly-once, in the
worker's transaction (pipeline.streaming.transactions). The next batch is prepared while
the previous one's records are on their way, reading its rows.

An event that cannot be processed (bytes that do not decode, an unknown schema id, a rule
that raises) fails alone: its dead letter settles with the batch. An event whose writer
schema is being fetched is deferred with the rest of its partition. What belongs to no
single event (the registry away, a failed delivery) has the batch tried once more whole,
then event by event with a growing pause, then dead-lettered (docs/guarantees.md,
"Failures and dead letters"). A rule emitting to an undeclared topic stops the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Generic, Protocol, TypeVar, cast

from pipeline.domain.encoding import EncodingError
from pipeline.serde.errors import PipelineCodecError, RegistryUnavailable
from pipeline.streaming.dead_letters import DeadLetters, error_class_of
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, Assignment, Event, Message, PartitionStore
from pipeline.streaming.producer import Delivered, Outgoing, ProducerRecord, RecordSender
from pipeline.streaming.topology import RuleBug

log = logging.getLogger(__name__)

Row = TypeVar("Row")


Sender = Callable[[Sequence[ProducerRecord]], Awaitable["asyncio.Future[Delivered]"]]


class Deleted:
    """A row deleted by a batch not stored yet (``Settlement.unsettled``'s value for it)."""


DELETED = Deleted()


class RowCache(Generic[Row]):
    """The rows an agent last wrote to its table's store, as they were before encoding:
    a row read again comes from here, without a read from the store or a decode (a stock
    row names a position for each source partition, whose decoding is most of a read).

    It holds what the store holds for its keys as long as the agent is the only writer of
    its partitions, which is true while the worker's assignment stands. A rebalance is
    where the store is written otherwise (bulk restores, Faust's recovery, standby
    updates), so a rebalance's start and end ``clear`` it. Bounded: beyond ``capacity``
    rows, the one written longest ago goes first. Rows must not be changed in place,
    which the rules do not (they return new rows).
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.rows: dict[bytes, Row] = {}

    def get(self, key: bytes) -> Row | None:
        return self.rows.get(key)

    def put(self, written: Iterable[tuple[bytes, Row | None]]) -> None:
        """Keep the rows just written to the store (None: deleted from it)."""
        rows = self.rows  # one dict throughout, though ``clear`` may replace it meanwhile
        for key, row in written:
            rows.pop(key, None)  # to the end: the order is the order of writing
            if row is not None:
                rows[key] = row
        excess = len(rows) - self.capacity
        if excess > 0:
            for key in list(islice(rows, excess)):
                del rows[key]

    def clear(self) -> None:
        # Replaced, not emptied: the consumer's thread calls it at a rebalance's start,
        # and a ``put`` in progress on the loop then fills the dict that is dropped.
        self.rows = {}


class RowBatch(Generic[Row]):
    """The rows one batch changes: read through (this batch's changes, then those of
    the batch still in flight before it, then the table), sent as changelog records
    once the batch's derived events were acknowledged, and written to the table's
    store once the changelog records were acknowledged too (and kept in the table's
    ``RowCache``, if it has one, for the batches after it).

    Rows go to the store directly, in one write per partition, not through the table
    (which would send each changelog record again through Faust's producer). Each
    record goes to the partition of the event that changed the row, as Faust's own
    table writes do, and the store remembers the last changelog offset it holds, as
    after Faust's writes. A row deleted is a tombstone in the changelog and a delete in
    the store.
    """

    def __init__(
        self,
        store: PartitionStore,
        decode: Callable[[bytes], Row],
        encode: Callable[[Row], bytes],
        send: Sender,
        previous: Prepared | None = None,
        unsettled: Mapping[bytes, Row] | None = None,
        cache: RowCache[Row] | None = None,
    ) -> None:
        self.store = store
        self.read = store.read
        self.changelog_topic = store.changelog_topic
        self.decode = decode
        self.encode = encode
        # By key: the new row (None: deleted) and the event it is written for.
        self.pending: dict[bytes, tuple[Row | None, Event]] = {}
        self.changelog: list[ProducerRecord] = []
        self._send = send
        # The rows of the batch in flight, not yet in the store.
        self.previous: RowBatch[Row] | None = (
            cast(RowBatch[Row], previous.rows) if previous is not None else None
        )
        # Rows of settled batches not in the store yet (exactly-once: their transaction
        # has not committed); None under at-least-once, which stores a batch's rows
        # before the next batch settles.
        self.unsettled = unsettled
        self.cache = cache

    def get(self, key: bytes, event: Event) -> Row | None:
        pending = self.pending.get(key)
        if pending is None and self.previous is not None:
            pending = self.previous.pending.get(key)
        if pending is not None:
            return pending[0]
        if self.unsettled:
            row = self.unsettled.get(key)
            if row is not None:
                return None if row is DELETED else row
        if self.cache is not None:
            row = self.cache.get(key)
            if row is not None:
                return row
        stored = self.read(event.message.partition, key)
        return self.decode(stored) if stored is not None else None

    def put(self, key: bytes, row: Row, event: Event) -> None:
        self.pending[key] = (row, event)

    def delete(self, key: bytes, event: Event) -> None:
        """Delete ``key``'s row, in the partition of ``event``: its tombstone goes after
        every record this batch had put before (a row written, then deleted, is no longer
        where it was first written)."""
        self.pending.pop(key, None)
        self.pending[key] = (None, event)

    def scan(self, partition: int, start: bytes, end: bytes) -> list[tuple[bytes, Row]]:
        """The rows of ``partition`` with keys in ``[start, end)``, in key order, read
        through as ``get`` reads (the store, then the rows not stored yet). The rows not
        stored yet are told apart by key alone: a range must hold keys of one partition
        (keys that name it)."""
        found: dict[bytes, Row | None] = {
            key: self.decode(value) for key, value in self.store.scan(partition, start, end)
        }
        found.update(self._unstored(start, end))
        return sorted((key, row) for key, row in found.items() if row is not None)

    def keys(self, partition: int, start: bytes, end: bytes) -> list[bytes]:
        """The keys ``scan`` gives, without decoding their rows (an index's entries)."""
        found = {key: True for key, _ in self.store.scan(partition, start, end)}
        found.update((key, row is not None) for key, row in self._unstored(start, end))
        return sorted(key for key, present in found.items() if present)

    def _unstored(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, Row | None]]:
        """The rows not stored yet with keys in ``[start, end)`` (None: deleted), the
        latest last."""
        if self.unsettled:
            for key, row in self.unsettled.items():
                if start <= key < end:
                    yield key, None if row is DELETED else row
        for batch in (self.previous, self):
            if batch is not None:
                for key, (pending, _) in batch.pending.items():
                    if start <= key < end:
                        yield key, pending

    async def send(self, derived: list[Outgoing]) -> Prepared:
        """Hand the derived events to the producer; the rows follow in ``persist``."""
        encode = self.encode
        self.changelog = [
            ProducerRecord(
                self.changelog_topic,
                key,
                None if row is None else encode(row),
                event.message.partition,
            )
            for key, (row, event) in self.pending.items()
        ]
        delivery = await self._send(derived)
        self.previous = None  # from here on only this batch's own rows are asked for
        return Prepared(delivery, self, derived)

    async def persist(self) -> None:
        """Send the changelog records, then, once acknowledged, store the rows. Only
        after the derived events were delivered (see the module's docstring)."""
        self.write(await (await self._send(self.changelog)))

    def write(self, delivered: Delivered) -> None:
        """Store the rows, now that their changelog records were ``delivered`` (a send
        of their own: every partition in it is a changelog partition)."""
        by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
        for record in self.changelog:
            by_partition.setdefault(cast(int, record.partition), []).append(
                (cast(bytes, record.key), record.value)
            )
        for partition, rows in by_partition.items():
            self.store.write(partition, rows)
        for (_, partition), offset in delivered.items():
            self.store.set_changelog_offset(partition, offset)
        if self.cache is not None:
            self.cache.put((key, row) for key, (row, _) in self.pending.items())


@dataclass
class Prepared:
    """A batch whose derived events were handed to the producer."""

    delivery: asyncio.Future[Delivered]
    rows: RowBatch[Any] | None = None
    # What ``delivery`` is for: exactly-once sends them at settlement instead.
    derived: Sequence[Outgoing] = ()
    # Events this batch could not process, each with why: dead-lettered at settlement.
    failed: Sequence[tuple[Event, Exception]] = ()
    # Events left for a later batch, in their order: each waits for a writer schema
    # (``waiting``), or follows one that does in its partition.
    deferred: Sequence[Event] = ()
    waiting: Sequence[asyncio.Future[Any]] = ()

    def settling(self, events: Sequence[Event]) -> Sequence[Event]:
        """Of ``events`` (the batch), those this batch settles: all but the deferred."""
        if not self.deferred:
            return events
        deferred = {id(event) for event in self.deferred}
        return [event for event in events if id(event) not in deferred]

    async def complete(self, *also: asyncio.Future[Delivered]) -> None:
        """Wait for the broker's acknowledgement of every derived event (and of the
        sends ``also`` made beside them), then persist the rows."""
        await self.delivery
        for delivery in also:
            await delivery
        if self.rows is not None:
            await self.rows.persist()

    def abandon(self) -> None:
        """Not completed: its derived events may still be delivered (duplicates, as
        after a crash), but nobody waits for the outcome; its rows are never sent."""
        self.delivery.add_done_callback(_ignore_outcome)


def _ignore_outcome(delivery: asyncio.Future[Delivered]) -> None:
    if not delivery.cancelled():
        delivery.exception()  # retrieved, so asyncio does not log it as lost


# Prepares a batch on top of the batch still in flight (None when there is none).
BatchHandler = Callable[[Sequence[Event], Prepared | None], Awaitable[Prepared]]


# Has those of the assigned partitions that had no event for a while act by the wall
# clock, prepared on top of a batch as ``BatchHandler`` is (the runner gives None: it runs
# it after the batch in flight settled): a windowed agent's closing of idle partitions
# (pipeline.streaming.windows).
QuietHandler = Callable[[Assignment, Prepared | None], Awaitable[Prepared]]


@dataclass(frozen=True)
class Quiet:
    """What an agent does by the wall clock: ``handler``, once every ``interval_s``, run
    as a batch of its own between the agent's batches (``EventRunner.quiet_batch``)."""

    interval_s: float
    handler: QuietHandler


# What stops an agent at once: its cancellation, and a bug in its rules, which no retry
# and no dead letter would fix.
STOPS_THE_AGENT = (asyncio.CancelledError, RuleBug)


def is_permanent(error: BaseException) -> bool:
    """Errors of one event that retrying cannot fix: bad bytes, unknown schemas, invalid
    records."""
    if isinstance(error, EncodingError):
        return True
    return isinstance(error, PipelineCodecError) and not isinstance(error, RegistryUnavailable)


def by_topic(events: Sequence[Event]) -> tuple[dict[str, int], dict[str, float]]:
    """The events' count and oldest timestamp (seconds since the epoch), by topic."""
    counts: dict[str, int] = {}
    oldest: dict[str, float] = {}
    for event in events:
        message = event.message
        topic, timestamp = message.topic, message.timestamp
        counts[topic] = counts.get(topic, 0) + 1
        if timestamp is not None and timestamp < oldest.get(topic, timestamp + 1):
            oldest[topic] = timestamp
    return counts, oldest


class Settlement(Protocol):
    """What the processing guarantee decides: when a batch's outputs are sent, and how
    a prepared batch (or a dead letter) becomes durable and its events acknowledged."""

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        """What a batch hands over while it is prepared (its derived events)."""
        ...

    def unsettled(self, store: PartitionStore) -> Mapping[bytes, Any] | None:
        """Rows of settled batches not yet in ``store`` (by key), for the batches read
        after them."""
        ...

    async def settle(
        self, arrivals: Arrivals, events: Sequence[Event], prepared: Prepared, agent: str
    ) -> None:
        """Make ``prepared`` durable, its dead letters (from ``agent``) included, and
        acknowledge ``events``; raises what stopped it."""
        ...

    async def dead_letter(
        self, arrivals: Arrivals, event: Event, error: BaseException, attempts: int, agent: str
    ) -> None:
        """Send ``event``, which ``agent`` could not process, to its dead-letter topic and
        acknowledge it."""
        ...


@dataclass
class AtLeastOnce:
    """The order of the module's docstring: derived events, then changelog records,
    then the store, then the acknowledgements."""

    producer: RecordSender
    dead_letters: DeadLetters

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        return await self.producer.send(messages)

    def unsettled(self, store: PartitionStore) -> Mapping[bytes, Any] | None:
        return None

    async def settle(
        self, arrivals: Arrivals, events: Sequence[Event], prepared: Prepared, agent: str
    ) -> None:
        # The dead letters travel beside the batch's derived events: one round trip for both.
        # Both are stored before the rows: a row that passed a dead-lettered event's
        # position (a later event of its key, or a window's partition clock) would skip it
        # in a replay.
        dead_letters = await self.dead_letters.send_all(prepared.failed, agent)
        await prepared.complete(dead_letters)
        self.dead_letters.report_all(prepared.failed)
        ack = arrivals.ack
        for event in events:
            ack(event)

    async def dead_letter(
        self, arrivals: Arrivals, event: Event, error: BaseException, attempts: int, agent: str
    ) -> None:
        await self.dead_letters.send(event.message, error, attempts, agent)
        arrivals.ack(event)


@dataclass
class InFlight:
    events: list[Event]
    prepared: Prepared
    # Completes the batch and acknowledges its events, or gives the error that stopped it.
    settled: asyncio.Task[Exception | None]


@dataclass
class EventRunner:
    """Runs one agent's batches (``consume``)."""

    # The agent's name: its dead letters say which agent of the service failed them.
    agent: str
    settlement: Settlement
    metrics: Metrics
    # The most events one batch takes: bounds the work redone after a crash and the time
    # a rebalance waits for the batch in hand.
    max_batch: int
    # Pauses between attempts; len(backoff) + 1 attempts in all.
    backoff: Sequence[float] = field(default=(0.1, 0.5, 2.0))
    # What the agent does by the wall clock, busy or not; None: nothing.
    quiet: Quiet | None = None

    async def consume(self, arrivals: Arrivals, handler: BatchHandler) -> None:
        """Handle the agent's events for as long as it runs; with ``quiet``, run the quiet
        batch once every interval between batches, busy or not (a busy partition must not
        keep an idle one's windows open; the quiet handler picks the idle partitions)."""
        # Waits for events only with none in hand but the batch in flight, which settles
        # on its own, and those deferred, whose writer schemas are being fetched: at a
        # rebalance Faust stops the flow, then waits for every event handed out to be
        # acknowledged, so nothing may wait holding one for longer than that.
        in_flight: InFlight | None = None
        held: Sequence[Event] = ()
        waiting: Sequence[asyncio.Future[Any]] = ()
        taking: asyncio.Future[list[Event]] | None = None
        loop = asyncio.get_running_loop()
        quiet = self.quiet
        quiet_due = loop.time() + quiet.interval_s if quiet is not None else 0.0
        try:
            while True:
                if taking is None:
                    taking = asyncio.ensure_future(arrivals.take(self.max_batch))
                if quiet is not None and not held:
                    if loop.time() >= quiet_due:
                        await self.quiet_batch(arrivals, in_flight, handler)
                        in_flight = None
                        quiet_due = loop.time() + quiet.interval_s
                    done, _ = await asyncio.wait([taking], timeout=quiet_due - loop.time())
                    if not done:
                        continue
                if held:
                    # Deferred events go first, so each partition keeps its order.
                    if waiting:
                        await asyncio.wait([taking, *waiting], return_when=asyncio.FIRST_COMPLETED)
                    arrived: list[Event] = []
                    if taking.done():
                        arrived, taking = taking.result(), None
                        if not arrived:
                            break  # stopping: the deferred events were not acknowledged
                    batch = [*held, *arrived]
                else:
                    batch = await taking
                    taking = None
                    if not batch:
                        break
                self.metrics.batch_size.observe(len(batch))
                in_flight = await self._advance(arrivals, in_flight, batch, handler)
                prepared = in_flight.prepared if in_flight is not None else None
                held = prepared.deferred if prepared is not None else ()
                waiting = prepared.waiting if prepared is not None else ()
        finally:
            if taking is not None:
                taking.cancel()
        if in_flight is not None:
            await self._finish(arrivals, in_flight, handler)

    async def quiet_batch(
        self,
        arrivals: Arrivals,
        in_flight: InFlight | None,
        handler: BatchHandler,
    ) -> None:
        """The quiet handler's batch for the partitions ``arrivals`` holds, serialized with
        the agent's own: after the batch in flight settled, and settled before the next
        batch is prepared, so that batch reads only what is durable. One that fails is
        logged and left to the next quiet interval: it acknowledges no event. One with
        nothing to send settles nothing (under exactly_once it would open a transaction,
        perhaps before the worker joined its group). One whose assignment changed while it
        was prepared (a rebalance began) is abandoned: its clocks are not written for
        partitions another worker may hold by now; the finals it may have sent repeat,
        identical, when their windows close again by the same stored clocks."""
        assert self.quiet is not None
        if in_flight is not None:
            await self._finish(arrivals, in_flight, handler)
        assignment = arrivals.held()
        if not assignment.partitions:
            return
        try:
            prepared = await self.quiet.handler(assignment, None)
        except STOPS_THE_AGENT:
            raise
        except Exception as error:
            log.warning("agent %s: the quiet batch failed (%r)", self.agent, error)
            return
        if not prepared.derived and (prepared.rows is None or not prepared.rows.changelog):
            return
        if arrivals.held() != assignment:
            prepared.abandon()
            return
        failure = await self._settle(arrivals, (), prepared)
        if failure is not None:
            log.warning("agent %s: the quiet batch was not settled (%r)", self.agent, failure)

    async def _advance(
        self,
        arrivals: Arrivals,
        in_flight: InFlight | None,
        batch: list[Event],
        handler: BatchHandler,
    ) -> InFlight | None:
        """Prepare ``batch``, then settle the batch in flight; the new batch in flight."""
        try:
            prepared = await handler(batch, in_flight.prepared if in_flight else None)
        except STOPS_THE_AGENT:
            raise
        except Exception as error:
            if in_flight is not None:
                undelivered = await in_flight.settled
                if undelivered is not None:
                    batch = [*in_flight.events, *batch]
            await self._again(arrivals, batch, handler, error)
            return None
        if in_flight is not None:
            undelivered = await in_flight.settled
            if undelivered is not None:
                # The new batch was prepared on rows that will not be written.
                prepared.abandon()
                await self._again(arrivals, [*in_flight.events, *batch], handler, undelivered)
                return None
        # Settles in a task of its own: while the agent waits for its next event, a
        # rebalance waits for every event handed out to be acknowledged, and this batch's
        # would otherwise never be.
        settling = prepared.settling(batch)
        settled = asyncio.ensure_future(self._settle(arrivals, settling, prepared))
        return InFlight(list(settling), prepared, settled)

    async def _again(
        self, arrivals: Arrivals, events: list[Event], handler: BatchHandler, error: Exception
    ) -> None:
        """``events`` (in order), whose batch failed as a whole with ``error``: the registry
        away, a delivery or a commit that failed. Tried once more as one batch after the
        first pause, so a fault that passed costs one more round trip, not one per event.
        Failing again, or for a permanent ``error`` (an event at fault that slipped
        through), they are handled one at a time, as are the events the batch deferred:
        only the event at fault is retried, with its attempts counted, and dead-lettered."""
        if is_permanent(error) or not self.backoff:
            log.warning("batch of %d failed (%r): handling it event by event", len(events), error)
            await self._one_by_one(arrivals, events, handler)
            return
        pause = self.backoff[0]
        log.warning("batch of %d failed (%r): again in %.1f s", len(events), error, pause)
        for topic in {event.message.topic for event in events}:
            self.metrics.retries.labels(topic).inc()
        await asyncio.sleep(pause)
        failure: Exception | None
        try:
            prepared = await handler(events, None)
        except STOPS_THE_AGENT:
            raise
        except Exception as again:
            failure = again
        else:
            failure = await self._settle(arrivals, prepared.settling(events), prepared)
            if failure is None:
                await self._one_by_one(arrivals, prepared.deferred, handler)
                return
        log.warning(
            "batch of %d failed again (%r): handling it event by event", len(events), failure
        )
        await self._one_by_one(arrivals, events, handler)

    async def _settle(
        self, arrivals: Arrivals, events: Sequence[Event], prepared: Prepared
    ) -> Exception | None:
        try:
            await self.settlement.settle(arrivals, events, prepared, self.agent)
        except Exception as error:
            return error
        self.metrics.batch_settled(*by_topic(events))
        self._count_failed(prepared)
        return None

    def _count_failed(self, prepared: Prepared) -> None:
        for event, error in prepared.failed:
            self.metrics.dead_letters.labels(event.message.topic, error_class_of(error)).inc()

    async def _finish(self, arrivals: Arrivals, in_flight: InFlight, handler: BatchHandler) -> None:
        undelivered = await in_flight.settled
        if undelivered is not None:
            log.warning(
                "batch of %d not delivered (%r): handling it event by event",
                len(in_flight.events),
                undelivered,
            )
            await self._one_by_one(arrivals, in_flight.events, handler)

    async def _one_by_one(
        self, arrivals: Arrivals, events: Sequence[Event], handler: BatchHandler
    ) -> None:
        for event in events:
            await self.run(arrivals, event, handler)

    async def run(self, arrivals: Arrivals, event: Event, handler: BatchHandler) -> None:
        """One event, settled before returning: retried, else dead-lettered."""
        message: Message = event.message
        self.metrics.events_processed.labels(message.topic).inc()
        attempt = 0
        while True:
            attempt += 1
            try:
                prepared = await handler([event], None)
                while prepared.deferred:  # its writer schema is being fetched
                    await asyncio.wait(prepared.waiting)
                    prepared = await handler([event], None)
                await self.settlement.settle(arrivals, [event], prepared, self.agent)
                self._count_failed(prepared)
                return
            except STOPS_THE_AGENT:
                raise
            except Exception as error:
                last_attempt = attempt > len(self.backoff)
                if is_permanent(error) or last_attempt:
                    await self.settlement.dead_letter(arrivals, event, error, attempt, self.agent)
                    self.metrics.dead_letters.labels(message.topic, error_class_of(error)).inc()
                    return
                self.metrics.retries.labels(message.topic).inc()
                pause = self.backoff[attempt - 1]
                log.warning(
                    "%s[%d]@%d failed (attempt %d), retrying in %.1f s: %r",
                    message.topic,
                    message.partition,
                    message.offset,
                    attempt,
                    pause,
                    error,
                )
                await asyncio.sleep(pause)
