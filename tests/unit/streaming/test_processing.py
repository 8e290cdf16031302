"""The agents' runner without a broker: fake arrivals deliver events in arrivals (what
is waiting in the channel's queue at once); a recording handler prepares batches whose
delivery the test resolves or fails."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from confluent_kafka import KafkaError

from pipeline.serde.errors import NotConfluentFraming, RegistryUnavailable, UndecodableKey
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.processing import (
    AtLeastOnce,
    Event,
    EventRunner,
    Prepared,
    RowBatch,
    RowCache,
    by_topic,
)
from pipeline.streaming.producer import (
    BatchProducer,
    Delivered,
    DeliveryFailed,
    Outgoing,
    ProducerRecord,
)
from pipeline.streaming.topology import UndeclaredTopic


@dataclass
class RecordingDeadLetters:
    sent: list[tuple[int, BaseException, int]] = field(default_factory=list)

    async def send(self, message: Any, error: BaseException, attempts: int, agent: str) -> None:
        self.sent.append((message.offset, error, attempts))

    async def send_all(
        self, failed: Sequence[tuple[Any, BaseException]], agent: str
    ) -> asyncio.Future[Any]:
        self.sent += [(event.message.offset, error, 1) for event, error in failed]
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result({})
        return done

    def report_all(self, failed: Sequence[tuple[Any, BaseException]]) -> None:
        pass


@dataclass
class FakeMessage:
    offset: int
    topic: str = "order_created"
    partition: int = 3
    # Seconds since the epoch, as Faust gives it.
    timestamp: float = field(default_factory=time.time)


@dataclass
class FakeEvent:
    message: FakeMessage


def events(*offsets: int) -> list[Event]:
    return [cast(Event, FakeEvent(FakeMessage(offset))) for offset in offsets]


def runner(max_batch: int = 10) -> tuple[EventRunner, RecordingDeadLetters]:
    dead_letters = RecordingDeadLetters()
    event_runner = EventRunner(
        "orders",
        settlement=AtLeastOnce(cast(BatchProducer, None), cast(DeadLetters, dead_letters)),
        metrics=Metrics(),
        backoff=(0, 0, 0),
        max_batch=max_batch,
    )
    return event_runner, dead_letters


class FakeArrivals:
    """``Arrivals`` of a list: each inner list arrives at once (all of it waits in the
    queue), the next a moment after it was taken; then the end."""

    def __init__(self, arrivals: list[list[int]], log: list[str]) -> None:
        self.waiting = [events(*arrival) for arrival in arrivals]
        self.log = log
        self.between = False

    async def take(self, limit: int) -> list[Event]:
        if self.between:
            await asyncio.sleep(0.05)  # the next arrival comes once this one was handled
        if not self.waiting:
            return []
        arrival = self.waiting[0]
        batch, arrival[:] = arrival[:limit], arrival[limit:]
        self.between = not arrival
        if not arrival:
            self.waiting.pop(0)
        return batch

    def ack(self, event: Event) -> None:
        self.log.append(f"ack {event.message.offset}")


class Handler:
    """Prepares batches (logging them); ``fail_on`` offsets raise when prepared,
    ``undelivered`` batches (by first offset) fail their delivery once."""

    def __init__(
        self,
        log: list[str],
        fail_on: Sequence[BaseException | None] = (),
        undelivered: Sequence[int] = (),
        poison: int | None = None,
    ) -> None:
        self.log = log
        self.failures = list(fail_on)
        self.undelivered = set(undelivered)
        self.poison = poison
        self.on_top_of: list[list[int] | None] = []

    async def __call__(self, batch: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        offsets = [event.message.offset for event in batch]
        self.log.append(f"prepare {offsets}")
        if self.poison in offsets:
            raise NotConfluentFraming(f"poison at {self.poison}")
        if self.failures:
            failure = self.failures.pop(0)
            if failure is not None:
                raise failure
        loop = asyncio.get_running_loop()
        delivery: asyncio.Future[Delivered] = loop.create_future()
        # The broker answers a moment later, as a real one does.
        if offsets[0] in self.undelivered:
            self.undelivered.discard(offsets[0])
            loop.call_later(0.005, delivery.set_exception, RuntimeError(f"broker lost {offsets}"))
        else:
            loop.call_later(0.005, delivery.set_result, {})
        return LoggedPrepared(delivery, None, self.log, offsets)


class LoggedPrepared(Prepared):
    def __init__(
        self,
        delivery: asyncio.Future[Delivered],
        rows: None,
        log: list[str],
        offsets: list[int],
    ) -> None:
        super().__init__(delivery, rows)
        self.log = log
        self.offsets = offsets

    async def complete(self, *also: asyncio.Future[Delivered]) -> None:
        await super().complete(*also)
        self.log.append(f"complete {self.offsets}")


def consume(
    arrivals: list[list[int]], handler: Handler, max_batch: int = 10
) -> RecordingDeadLetters:
    event_runner, dead_letters = runner(max_batch)
    asyncio.run(event_runner.consume(FakeArrivals(arrivals, handler.log), handler))
    return dead_letters


def test_batches_take_what_already_arrived_up_to_the_maximum() -> None:
    log: list[str] = []
    consume([[1, 2, 3, 4, 5], [6]], Handler(log), max_batch=2)
    assert [line for line in log if line.startswith("prepare")] == [
        "prepare [1, 2]",
        "prepare [3, 4]",
        "prepare [5]",
        "prepare [6]",
    ]
    assert [line for line in log if line.startswith("ack")] == [f"ack {n}" for n in range(1, 7)]


def test_batches_are_measured_once_each_size_and_latency() -> None:
    event_runner, _ = runner(max_batch=2)
    asyncio.run(event_runner.consume(FakeArrivals([[1, 2, 3, 4, 5]], []), Handler([])))
    sample = event_runner.metrics.registry.get_sample_value
    assert sample("pipeline_batch_size_count") == 3
    assert sample("pipeline_batch_size_sum") == 5
    assert sample("pipeline_batch_size_bucket", {"le": "1.0"}) == 1
    orders = {"topic": "order_created"}
    assert sample("pipeline_events_processed_total", orders) == 5
    assert sample("pipeline_processing_latency_seconds_count", orders) == 3
    assert 0 < (sample("pipeline_processing_latency_seconds_sum", orders) or 0) < 5


def test_by_topic_counts_events_and_keeps_the_oldest_timestamp() -> None:
    batch = [
        cast(Event, FakeEvent(FakeMessage(offset, topic, timestamp=timestamp)))
        for offset, topic, timestamp in [
            (1, "order_created", 20.0),
            (2, "stock_adjusted", 30.0),
            (3, "order_created", 10.0),
            (4, "order_created", 15.0),
        ]
    ]
    assert by_topic(batch) == (
        {"order_created": 3, "stock_adjusted": 1},
        {"order_created": 10.0, "stock_adjusted": 30.0},
    )


def test_the_next_batch_is_prepared_while_one_is_in_flight_and_acks_follow_completion() -> None:
    log: list[str] = []
    consume([[1, 2, 3, 4], [5]], Handler(log), max_batch=2)
    assert log == [
        "prepare [1, 2]",  # [3, 4] waits: [1, 2] stays in flight
        "prepare [3, 4]",
        "complete [1, 2]",
        "ack 1",
        "ack 2",
        "complete [3, 4]",  # settles on its own, before the next arrival
        "ack 3",
        "ack 4",
        "prepare [5]",
        "complete [5]",
        "ack 5",
    ]


def test_a_batch_abandoned_mid_way_is_never_acknowledged() -> None:
    log: list[str] = []
    event_runner, _ = runner()
    arrivals = FakeArrivals([[1, 2], [3]], log)

    async def crash_on_3(batch: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        if batch[0].message.offset == 3:
            raise asyncio.CancelledError  # the worker stops
        done: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        done.set_result({})
        return Prepared(done)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(event_runner.consume(arrivals, crash_on_3))
    assert log == ["ack 1", "ack 2"]


def test_a_failed_batch_is_handled_event_by_event_and_only_the_bad_one_dead_lettered() -> None:
    log: list[str] = []
    dead_letters = consume([[10, 11, 12]], Handler(log, poison=11))
    assert log == [
        "prepare [10, 11, 12]",
        "prepare [10]",
        "complete [10]",
        "ack 10",
        "prepare [11]",
        "ack 11",
        "prepare [12]",
        "complete [12]",
        "ack 12",
    ]
    assert [(offset, attempts) for offset, _, attempts in dead_letters.sent] == [(11, 1)]


def test_an_undelivered_batch_in_flight_is_redone_whole_with_the_batch_prepared_on_top_of_it() -> (
    None
):
    log: list[str] = []
    dead_letters = consume([[1, 2, 3, 4]], Handler(log, undelivered=[1]), max_batch=2)
    assert log == [
        "prepare [1, 2]",
        "prepare [3, 4]",  # prepared on [1, 2]'s rows, which are never written
        "prepare [1, 2, 3, 4]",  # both again, in order, as one batch: one round trip
        "complete [1, 2, 3, 4]",
        "ack 1",
        "ack 2",
        "ack 3",
        "ack 4",
    ]
    assert dead_letters.sent == []


def test_a_batch_that_fails_as_a_whole_is_tried_whole_once_more_before_event_by_event() -> None:
    log: list[str] = []
    once: list[BaseException | None] = [RegistryUnavailable("down a moment")]
    assert consume([[5, 6, 7]], Handler(log, fail_on=once)).sent == []
    assert log == ["prepare [5, 6, 7]"] * 2 + ["complete [5, 6, 7]", "ack 5", "ack 6", "ack 7"]
    log.clear()
    twice: list[BaseException | None] = [RuntimeError("broker away")] * 2
    assert consume([[5, 6]], Handler(log, fail_on=twice)).sent == []
    assert log == ["prepare [5, 6]"] * 2 + [
        "prepare [5]",
        "complete [5]",
        "ack 5",
        "prepare [6]",
        "complete [6]",
        "ack 6",
    ]


def test_transient_failures_are_retried_until_they_succeed() -> None:
    log: list[str] = []
    failures: list[BaseException | None] = [
        RuntimeError("batch"),
        RuntimeError("broker away"),
        RegistryUnavailable("down"),
    ]
    dead_letters = consume([[7]], Handler(log, fail_on=failures))
    assert log == ["prepare [7]"] * 4 + ["complete [7]", "ack 7"]
    assert dead_letters.sent == []


def test_a_persistent_failure_is_dead_lettered_after_bounded_attempts() -> None:
    log: list[str] = []
    failures: list[BaseException | None] = [RuntimeError(f"boom {n}") for n in range(10)]
    dead_letters = consume([[42]], Handler(log, fail_on=failures))
    # The batch, once more whole, then 4 attempts of the event alone.
    assert log.count("prepare [42]") == 6
    ((offset, error, attempts),) = dead_letters.sent
    assert (offset, str(error), attempts) == (42, "boom 5", 4)
    assert log[-1] == "ack 42"


def test_a_key_that_is_not_utf8_is_dead_lettered_at_once() -> None:
    log: list[str] = []
    failures: list[BaseException | None] = [UndecodableKey("the key is not UTF-8")] * 2
    dead_letters = consume([[5]], Handler(log, fail_on=failures))
    assert [(type(e).__name__, n) for _, e, n in dead_letters.sent] == [("UndecodableKey", 1)]


class Broker:
    """Records what is sent; each send's delivery is settled by the test."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.deliveries: list[asyncio.Future[Delivered]] = []

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        self.sent.append([f"{m.topic}:{m.key.decode()}={m.value.decode()}" for m in messages])
        delivery: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        self.deliveries.append(delivery)
        return delivery


def stock_batch(
    table: MemoryPartitionStore, broker: Broker, cache: RowCache[int] | None = None
) -> RowBatch[int]:
    rows = RowBatch(table, int, lambda row: str(row).encode(), broker.send, cache=cache)
    event = events(40)[0]
    rows.put(b"sku-1", (rows.get(b"sku-1", event) or 10) - 3, event)
    return rows


def test_changelog_records_are_sent_only_once_the_derived_events_were_delivered() -> None:
    # A changelog record marks its events applied: a replay skips them, derived events
    # included, so the derived events must be on the broker first.
    table, broker = MemoryPartitionStore("stock-changelog"), Broker()

    async def scenario() -> None:
        rows = stock_batch(table, broker)
        prepared = await rows.send([Outgoing("stock_levels", b"sku-1", b"7")])
        completing = asyncio.ensure_future(prepared.complete())
        await asyncio.sleep(0)
        assert broker.sent == [["stock_levels:sku-1=7"]]  # the row waits
        broker.deliveries[0].set_result({("stock_levels", 0): 11})
        await asyncio.sleep(0)
        assert broker.sent[1] == ["stock-changelog:sku-1=7"]
        assert table.rows() == {}  # stored only once the changelog record is acknowledged
        broker.deliveries[1].set_result({("stock-changelog", 3): 99})
        await completing

    asyncio.run(scenario())
    assert table.rows() == {b"sku-1": b"7"}
    assert table.changelog_offsets == {3: 99}


def test_rows_of_a_batch_whose_derived_events_failed_are_neither_sent_nor_stored() -> None:
    table, broker = MemoryPartitionStore("stock-changelog"), Broker()

    async def scenario() -> None:
        rows = stock_batch(table, broker)
        prepared = await rows.send([Outgoing("stock_levels", b"sku-1", b"7")])
        timed_out = KafkaError(KafkaError._MSG_TIMED_OUT)
        broker.deliveries[0].set_exception(DeliveryFailed([timed_out]))
        with pytest.raises(DeliveryFailed):
            await prepared.complete()

    asyncio.run(scenario())
    assert broker.sent == [["stock_levels:sku-1=7"]]
    assert table.rows() == {}


def test_a_row_cache_keeps_the_rows_written_last_up_to_its_capacity() -> None:
    cache: RowCache[int] = RowCache(capacity=2)
    cache.put([(b"a", 1), (b"b", 2)])
    cache.put([(b"a", 3)])  # written again: now the newest
    cache.put([(b"c", 4)])
    assert (cache.get(b"a"), cache.get(b"b"), cache.get(b"c")) == (3, None, 4)
    cache.clear()
    assert cache.get(b"a") is None


def test_rows_are_read_from_the_cache_once_written_and_not_before() -> None:
    table, broker, cache = (
        MemoryPartitionStore("stock-changelog"),
        Broker(),
        RowCache[int](capacity=10),
    )

    async def scenario() -> None:
        failed = stock_batch(table, broker, cache)  # 10 - 3 = 7
        prepared = await failed.send([Outgoing("stock_levels", b"sku-1", b"7")])
        broker.deliveries[0].set_exception(DeliveryFailed([KafkaError(KafkaError._MSG_TIMED_OUT)]))
        with pytest.raises(DeliveryFailed):
            await prepared.complete()
        assert cache.get(b"sku-1") is None  # never stored, so never cached

        written = stock_batch(table, broker, cache)
        prepared = await written.send([Outgoing("stock_levels", b"sku-1", b"7")])
        completing = asyncio.ensure_future(prepared.complete())
        broker.deliveries[1].set_result({("stock_levels", 0): 11})
        await asyncio.sleep(0)
        broker.deliveries[2].set_result({("stock-changelog", 3): 99})
        await completing
        assert cache.get(b"sku-1") == 7

        # The next batch reads the cached row, not the store's bytes.
        table.write(3, [(b"sku-1", b"1000")])
        assert stock_batch(table, broker, cache).pending[b"sku-1"][0] == 4

    asyncio.run(scenario())


class Deferring:
    """A handler whose event ``unknown`` waits for its writer schema (a lookup answered a
    moment later): it and its partition's later events are deferred until then; the
    ``bad`` ones fail alone."""

    def __init__(self, log: list[str], unknown: int, bad: int) -> None:
        self.log = log
        self.unknown = unknown
        self.bad = bad
        self.lookup: asyncio.Future[Any] | None = None

    async def __call__(self, batch: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        loop = asyncio.get_running_loop()
        if self.lookup is None:
            self.lookup = loop.create_future()
            loop.call_later(0.05, self.lookup.set_result, None)
        deferred, failed, blocked = [], [], set()
        for event in batch:
            message = event.message
            if message.partition in blocked or (
                message.offset == self.unknown and not self.lookup.done()
            ):
                blocked.add(message.partition)
                deferred.append(event)
            elif message.offset == self.bad:
                failed.append((event, NotConfluentFraming("bad bytes")))
        self.log.append(f"prepare {[(e.message.partition, e.message.offset) for e in batch]}")
        delivery: asyncio.Future[Delivered] = loop.create_future()
        delivery.set_result({})
        return Prepared(
            delivery,
            failed=failed,
            deferred=deferred,
            waiting=[self.lookup] if deferred else [],
        )


class OneArrival:
    def __init__(self, batch: list[Event], log: list[str]) -> None:
        self.batch = batch
        self.log = log

    async def take(self, limit: int) -> list[Event]:
        batch, self.batch = self.batch, []
        if not batch:
            await asyncio.sleep(0.2)
        return batch

    def ack(self, event: Event) -> None:
        self.log.append(f"ack {event.message.partition}:{event.message.offset}")


def test_an_event_waiting_for_its_schema_holds_its_partition_only_and_one_bad_fails_alone() -> None:
    on = [(1, 10), (3, 20), (1, 11), (3, 21), (3, 22), (1, 12)]
    batch = [
        cast(Event, FakeEvent(FakeMessage(offset, partition=partition))) for partition, offset in on
    ]
    log: list[str] = []
    event_runner, dead_letters = runner()
    asyncio.run(event_runner.consume(OneArrival(batch, log), Deferring(log, unknown=11, bad=21)))
    acks = [line for line in log if line.startswith("ack")]
    # Partition 3 went on at once; partition 1 kept its order, 11 and 12 once 11's schema came.
    assert acks == ["ack 1:10", "ack 3:20", "ack 3:21", "ack 3:22", "ack 1:11", "ack 1:12"]
    prepared = [line for line in log if line.startswith("prepare")]
    assert prepared[1] == "prepare [(1, 11), (1, 12)]"  # the deferred, in their order
    assert [(offset, attempts) for offset, _, attempts in dead_letters.sent] == [(21, 1)]


def test_an_undeclared_topic_stops_the_agent_without_a_retry_or_a_dead_letter() -> None:
    log: list[str] = []
    bug = UndeclaredTopic("agent 'stock' emitted to 'elsewhere', which it does not declare")
    event_runner, dead_letters = runner(max_batch=2)
    handler = Handler(log, fail_on=[None, bug])
    with pytest.raises(UndeclaredTopic):
        asyncio.run(event_runner.consume(FakeArrivals([[1, 2], [3]], log), handler))
    assert dead_letters.sent == []
    # The batch before it settles; the failing one is neither retried nor acknowledged.
    assert [line for line in log if line.startswith("prepare")] == ["prepare [1, 2]", "prepare [3]"]
    assert "ack 3" not in log
