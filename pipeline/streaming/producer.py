"""The worker's producer: confluent-kafka (librdkafka), a batch at a time.

Derived events, changelog records, dead letters and ingested events go through
librdkafka rather than Faust's aiokafka producer: a produce call costs a few
microseconds of Python instead of a chain of futures and callbacks per message on
the event loop, which was most of a worker's time. A batch is sent, then awaited
as a whole: one future resolves when the broker acknowledged every message (or
any failed), with the offsets the messages got, which the tables record as their
changelog positions. Sending does not wait: an agent prepares its next batch
while one is on its way.

The delivery reports are served on the event loop, not a thread of their own:
librdkafka calls back into Python once per message, and a thread must take the GIL
for each call. While the loop computes, each take waits out the interpreter's
switch interval (5 ms), so a thread delivered a 500-message batch in 140-170 ms
against 3-5 ms when the loop idled (measured on this project's bench machine); served
between the loop's steps, the reports of a whole batch are taken at once.

One message can also be sent and awaited (``send_and_wait``), which answers
where it was stored: a dead letter, before its source event is acknowledged; an
ingested event, before the HTTP answer. The broker acknowledges a message only
once every in-sync replica has it (idempotence implies acks=all).

Faust still consumes, commits, rebalances and recovers; events are acknowledged
to it only after their batch was delivered, so a commit never covers a message
that was not delivered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from pipeline.settings import Settings

# librdkafka's "no partition given": the partitioner picks it from the key.
UNASSIGNED = -1
# While messages await their delivery reports, how often the event loop serves them.
REPORTS_INTERVAL_S = 0.001
# The back-off when librdkafka's queue is full.
QUEUE_FULL_PAUSE_S = 0.05


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        **settings.kafka_client_config(),
        # librdkafka's default partitioner is not the murmur2 hash aiokafka and Java
        # clients use; without this, one key could land on two partitions.
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 1,
    }


# Not frozen: several are made for every event, and a frozen dataclass costs about three
# times as much to build.
@dataclass(slots=True)
class ProducerRecord:
    """One message to send. Key and value may be absent: a dead letter copies its
    source message as it was."""

    topic: str
    key: bytes | None
    value: bytes | None
    # None: by the key (murmur2); a changelog record names its partition.
    partition: int | None = None
    headers: Sequence[tuple[str, bytes]] | None = None
    # Milliseconds since the epoch: the event time of the event it comes from; None: now.
    timestamp: int | None = None


@dataclass(slots=True)
class Outgoing(ProducerRecord):
    """What the agents and ingest send: always a key and a value."""

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Placement:
    """Where the broker stored one message."""

    topic: str
    partition: int
    offset: int


# The last offset delivered per (topic, partition) in one batch.
Delivered = dict[tuple[str, int], int]


class RecordSender(Protocol):
    """What sends the runtime's records: ``BatchProducer``, or a test's topics in memory
    (pipeline.streaming.testing)."""

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        """Hand ``messages`` over; the future resolves once every one was stored."""
        ...

    async def send_and_wait(self, message: ProducerRecord) -> Placement:
        """Send one message and wait until it was stored."""
        ...


class ProducerClosed(RuntimeError):
    """A send after ``close``: nothing would serve its delivery report."""


class DeliveryFailed(Exception):
    def __init__(self, errors: Sequence[KafkaError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(errors)} message(s) not delivered, first: {errors[0]}")


class _Batch:
    """Delivery reports of one batch, collected where they are served: on the event
    loop, or in a thread that flushes the producer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.remaining = size
        self.future: asyncio.Future[Delivered] = loop.create_future()
        self.delivered: Delivered = {}
        self.errors: list[KafkaError] = []

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(error)
        else:
            place = (message.topic() or "", message.partition() or 0)
            offset = message.offset() or 0
            if offset > self.delivered.get(place, -1):
                self.delivered[place] = offset
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if self.future.done():  # cancelled by the awaiting agent
            return
        if self.errors:
            self.future.set_exception(DeliveryFailed(self.errors))
        else:
            self.future.set_result(self.delivered)


class BatchProducer:
    """librdkafka producer whose delivery reports the event loop serves while any are
    due (the producer is made on the first send, so importing the app starts nothing)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = config
        self._started: Producer | None = None
        self._closed = False
        self._serving: asyncio.Task[None] | None = None

    @property
    def _producer(self) -> Producer:
        if self._started is None:
            self._started = Producer(self._config)
        return self._started

    async def _serve_reports(self) -> None:
        """Serve delivery reports until no message awaits one. ``len`` counts what is
        queued, in flight and reported but not served yet; a call that flushes (``close``,
        a transaction's commit) serves reports in its own thread meanwhile."""
        producer = self._producer
        try:
            while len(producer) and not self._closed:
                producer.poll(0)
                await asyncio.sleep(REPORTS_INTERVAL_S)
        finally:
            if self._serving is asyncio.current_task():
                self._serving = None

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        """Hand ``messages`` to librdkafka; the future resolves once the broker
        acknowledged them all (or fails with DeliveryFailed)."""
        if self._closed:
            raise ProducerClosed("the batch producer is closed: the worker is shutting down")
        loop = asyncio.get_running_loop()
        if not messages:
            done: asyncio.Future[Delivered] = loop.create_future()
            done.set_result({})
            return done
        batch = _Batch(loop, len(messages))
        produce = self._producer.produce
        for message in messages:
            while True:
                try:
                    produce(
                        message.topic,
                        message.value,
                        message.key,
                        UNASSIGNED if message.partition is None else message.partition,
                        on_delivery=batch.on_delivery,
                        headers=None if message.headers is None else list(message.headers),
                        timestamp=message.timestamp or 0,  # 0: librdkafka's clock
                    )
                    break
                except BufferError:
                    # librdkafka's queue is full: serve what was delivered, then wait.
                    self._producer.poll(0)
                    await asyncio.sleep(QUEUE_FULL_PAUSE_S)
        serving = self._serving
        if serving is None or serving.get_loop() is not loop:  # (a loop of its own per test)
            self._serving = loop.create_task(self._serve_reports())
        return batch.future

    async def send_and_wait(self, message: ProducerRecord) -> Placement:
        """Send one message and wait until the broker acknowledged it (or DeliveryFailed)."""
        delivered = await (await self.send([message]))
        ((topic, partition), offset) = next(iter(delivered.items()))
        return Placement(topic, partition, offset)

    def close(self, timeout: float = 10.0) -> int:
        """Deliver what is queued (up to ``timeout``); the messages still queued. What
        is not delivered belongs to batches whose events were never acknowledged, so
        they are consumed again: nothing is lost."""
        remaining = self._started.flush(timeout) if self._started is not None else 0
        self._closed = True
        return remaining
