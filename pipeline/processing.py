"""How every agent handles its events: in batches, with bounded retries per event,
then the dead-letter topic.

An agent takes the events that have already arrived, up to ``MAX_BATCH`` (one at
a time when they trickle in, so a quiet pipeline adds no latency). For a batch,
one broker round trip acknowledges every derived event, and table rows are
written only after that: a crash in between replays the batch, which re-sends
derived events (duplicates, never losses) and applies each row change once (rows
remember what they applied, see pipeline.rules). Faust's offsets advance only for
events acknowledged here, after their batch was handled.

A batch that fails is handled again one event at a time, so only the event at
fault is retried: with a growing pause (transient trouble: the registry or the
broker briefly away), and after the last attempt it is dead-lettered and the
agent moves on, so one bad message never blocks its partition. A message that
cannot be decoded is not retried: the same bytes will never decode, so it goes to
the dead-letter topic at once.

Faust's own ``take_events`` is not used: in a SIGKILL crash test a worker batching
with it never processed one stock_adjusted message (compare robinhood/faust issue
656 on ``take()``); here the agent iterates the stream itself with manual acks.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from faust.streams import Stream, _current_event
from faust.types import TP, ChannelT, EventT, Message, StoreT, StreamT, TableT

from pipeline.dlq import DeadLetters, error_class_of
from pipeline.encoding import EncodingError
from pipeline.errors import PipelineCodecError, RegistryUnavailable
from pipeline.metrics import Metrics
from pipeline.producer import Delivered, Outgoing

log = logging.getLogger(__name__)

Event = EventT[Any]
BatchHandler = Callable[[Sequence[Event]], Awaitable[None]]

# Bounds the work redone after a crash and the time a rebalance waits for the
# batch in hand.
MAX_BATCH = 500


def bind_event(event: Event) -> None:
    """Make ``event`` Faust's current event. Tables take the partition of a read or
    write (which RocksDB database, which changelog partition) from the current
    event; in a batch, each row is read and written under the event that changed it.
    """
    _current_event.set(weakref.ref(event))


Row = TypeVar("Row")


class RowBatch(Generic[Row]):
    """The rows one batch changes: read through (the batch's own changes first, then
    the table), sent as changelog records with the batch's derived events, and
    written to the table's store only once all of them were acknowledged.

    Rows go to the store directly, not through the table (which would send each
    changelog record again through Faust's producer). Each record goes to the
    partition of the event that changed the row, as Faust's own table writes do, and
    the store remembers the last changelog offset it holds, as after Faust's writes.
    """

    def __init__(
        self,
        table: TableT[bytes, bytes],
        decode: Callable[[bytes], Row],
        encode: Callable[[Row], bytes],
    ) -> None:
        self.store = cast(StoreT[bytes, bytes], table.data)
        self.changelog_topic = table.changelog_topic.get_topic_name()
        self.decode = decode
        self.encode = encode
        self.pending: dict[bytes, tuple[Row, Event]] = {}

    def get(self, key: bytes, event: Event) -> Row | None:
        if key in self.pending:
            return self.pending[key][0]
        bind_event(event)
        # From the store: the table's own get adds a membership test and sensors.
        stored = self.store.get(key)
        return self.decode(stored) if stored is not None else None

    def put(self, key: bytes, row: Row, event: Event) -> None:
        self.pending[key] = (row, event)

    async def send_and_write(
        self, send: Callable[[Sequence[Outgoing]], Awaitable[Delivered]], derived: list[Outgoing]
    ) -> None:
        """Send the derived events and the rows' changelog records; once all were
        acknowledged, write the rows to the store."""
        changes = list(self.pending.items())
        changelog = [
            Outgoing(self.changelog_topic, key, self.encode(row), event.message.partition)
            for key, (row, event) in changes
        ]
        delivered = await send([*derived, *changelog])
        store = self.store
        for record, (_, (_, event)) in zip(changelog, changes, strict=True):
            bind_event(event)
            store[record.key] = record.value
        for (topic, partition), offset in delivered.items():
            if topic == self.changelog_topic:
                store.set_persisted_offset(TP(topic, partition), offset)


async def batches(stream: StreamT[Any], max_size: int = MAX_BATCH) -> AsyncIterator[list[Event]]:
    """The stream's events in batches of those already waiting, acknowledged to Faust
    (so their offsets may be committed) only once the caller is done with the batch."""
    # noack is on the concrete Stream only (not on StreamT).
    manual = cast(Stream[Any], stream).noack()
    # An agent's stream reads a channel; its queue holds the events already fetched.
    waiting = cast(ChannelT[Any], manual.channel).queue
    batch: list[Event] = []
    async for event in manual.events():
        batch.append(event)
        if len(batch) < max_size and not waiting.empty():
            continue
        yield batch
        for handled in batch:
            await manual.ack(handled)
        batch = []


def is_permanent(error: BaseException) -> bool:
    """Errors that retrying cannot fix: bad bytes, unknown schemas, invalid records."""
    # A key that is not UTF-8 (agents decode keys as text) fails the same way every time.
    if isinstance(error, EncodingError | UnicodeDecodeError):
        return True
    return isinstance(error, PipelineCodecError) and not isinstance(error, RegistryUnavailable)


@dataclass
class EventRunner:
    dead_letters: DeadLetters
    metrics: Metrics
    # Pauses between attempts; len(backoff) + 1 attempts in all.
    backoff: Sequence[float] = field(default=(0.1, 0.5, 2.0))

    async def run_batch(self, events: Sequence[Event], handler: BatchHandler) -> None:
        try:
            await handler(events)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # Rows are written only after every derived event of the batch was
            # acknowledged, and skip what they already applied, so handling the
            # events again one by one neither loses nor doubles anything.
            log.warning("batch of %d failed (%r): handling it event by event", len(events), error)
            for event in events:
                await self.run(event, handler)
            return
        for topic, count in Counter(event.message.topic for event in events).items():
            self.metrics.events_processed.labels(topic).inc(count)

    async def run(self, event: Event, handler: BatchHandler) -> None:
        message: Message = event.message
        self.metrics.events_processed.labels(message.topic).inc()
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler([event])
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                last_attempt = attempt > len(self.backoff)
                if is_permanent(error) or last_attempt:
                    await self.dead_letters.send(message, error, attempt)
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
