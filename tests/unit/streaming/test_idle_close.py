"""Closing the windows of idle partitions by the wall clock (``window_idle_close_ms``),
through the public harness: off by default; on, a quiet partition's stream time advances
by the wall time it stayed quiet, its windows close by the stored clock, and a final a
crash repeats carries the same content."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pipeline.settings import Settings
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Assignment, Event
from pipeline.streaming.processing import AtLeastOnce, EventRunner, Prepared, Quiet
from pipeline.streaming.producer import Outgoing
from pipeline.streaming.testing import Delivery, MemoryTopics, Pending, Record, ServiceTest
from pipeline.streaming.windowing import clock_key
from tests.unit.streaming.test_windows import HOUR, MINUTE, T0, TOPICS, final, sales_service, send

IDLE = Settings(app_id="unit", partitions=1, window_idle_close_ms=30_000)
# From an event at T0 + 10 minutes, the stream time that closes the hour [T0, T0 + 1 h):
# its end plus the 5-minute grace, 55 minutes later.
UNTIL_CLOSED_S = 55 * 60


def test_off_by_default_a_quiet_partition_keeps_its_windows_open() -> None:
    service = ServiceTest(sales_service())
    send(service, T0 + 10 * MINUTE, ("A", 1))
    service.run()
    stored = service.stored_keys("sku_sales")
    service.quiet(7 * 24 * 3600)
    service.quiet(7 * 24 * 3600)
    assert service.emitted(TOPICS.sku_sales_hourly) == []
    assert service.stored_keys("sku_sales") == stored
    assert [w.final for w in service.windows("sku_sales", "A")] == [False]


def test_a_quiet_partitions_windows_close_by_the_wall_clock_one_quiet_batch_later() -> None:
    service = ServiceTest(sales_service(settings=IDLE))
    send(service, T0 + 10 * MINUTE, ("A", 1), ("B", 2))
    service.run()
    service.quiet(UNTIL_CLOSED_S)  # the stream time advanced (and stored): nothing closes yet
    assert service.emitted(TOPICS.sku_sales_hourly) == []
    service.quiet(30)  # closes by the stored stream time
    assert service.emitted(TOPICS.sku_sales_hourly) == [final("A", T0, 1, 1), final("B", T0, 2, 1)]
    assert service.timestamps(TOPICS.sku_sales_hourly) == [T0 + HOUR - 1] * 2
    service.quiet(30)
    assert len(service.emitted(TOPICS.sku_sales_hourly)) == 2  # once
    assert service.metric("pipeline_windows_closed_total", table="sku_sales") == 2


def test_a_partition_quiet_for_less_than_the_setting_is_left_alone() -> None:
    service = ServiceTest(sales_service(settings=IDLE))
    send(service, T0 + 59 * MINUTE, ("A", 1))
    service.run()
    stored = dict(service.stores["sku_sales"].rows())
    for _ in range(3):
        service.quiet(29)
        service.run()
        send(service, T0 + 59 * MINUTE, ("A", 1))  # an event every 29 s keeps it busy
    service.run()
    assert service.emitted(TOPICS.sku_sales_hourly) == []
    assert service.stores["sku_sales"].rows().keys() == stored.keys()


def test_an_event_after_the_wall_clock_closed_its_window_is_late_and_dead_lettered() -> None:
    """The trade-off with backfills: an old event arriving once the wall clock closed its
    window counts in none, as any late event."""
    service = ServiceTest(sales_service(settings=IDLE))
    send(service, T0 + 10 * MINUTE, ("A", 1))
    service.run()
    service.quiet(UNTIL_CLOSED_S)
    service.quiet(30)
    send(service, T0 + 20 * MINUTE, ("A", 5))  # a backfill's order of that hour
    service.run()
    (letter,) = service.dead_letters("unit-analytics_lines")
    assert letter.error == "LateEvent" and "key 'A'" in letter.reason
    assert service.emitted(TOPICS.sku_sales_hourly) == [final("A", T0, 1, 1)]
    assert [w.row.units for w in service.windows("sku_sales", "A")] == [1]


def test_a_final_repeated_after_a_crash_carries_the_same_content() -> None:
    """At-least-once: a crash after the final was delivered but before the clock that
    closed its window reached the changelog. The stored clock has the advanced stream time
    already, so an event for that window arriving after the restart is late, and the
    window closes again with the content it closed with."""
    service = ServiceTest(sales_service(settings=IDLE))
    send(service, T0 + 10 * MINUTE, ("A", 1))
    service.run()
    service.quiet(UNTIL_CLOSED_S)
    service.quiet(30)
    finals = service.emitted(TOPICS.sku_sales_hourly)
    changelog = service.topics.logs["unit-sku_sales-changelog", 0]
    last_clock = max(i for i, record in enumerate(changelog) if record.key == clock_key(0))
    del changelog[last_clock]
    restarted = service.restarted()
    send(restarted, T0 + 20 * MINUTE, ("A", 5))
    restarted.run()
    assert [letter.error for letter in restarted.dead_letters("unit-analytics_lines")] == [
        "LateEvent"
    ]
    restarted.quiet(30)
    restarted.quiet(30)
    assert restarted.emitted(TOPICS.sku_sales_hourly) == finals * 2


def test_a_partition_that_never_had_an_event_writes_nothing() -> None:
    service = ServiceTest(sales_service(settings=IDLE))
    service.quiet(3600)
    service.quiet(3600)
    assert service.stored_keys("sku_sales") == []
    assert service.topics.records("unit-sku_sales-changelog") == []


def test_after_a_rebalance_a_partitions_quiet_time_counts_from_then() -> None:
    """A partition assigned again may have had events on another worker meanwhile: the
    wall time before the rebalance does not advance its stream time."""
    service = ServiceTest(sales_service(settings=IDLE))
    send(service, T0 + 10 * MINUTE, ("A", 1))
    service.run()
    service.quiet(30)
    service.quiet(UNTIL_CLOSED_S, generation=1)  # counts from here
    service.quiet(30, generation=1)
    service.quiet(30, generation=1)
    assert service.emitted(TOPICS.sku_sales_hourly) == []
    service.quiet(UNTIL_CLOSED_S, generation=1)
    service.quiet(30, generation=1)
    assert service.emitted(TOPICS.sku_sales_hourly) == [final("A", T0, 1, 1)]


def test_an_agent_with_nothing_to_do_runs_its_quiet_batch_between_its_batches() -> None:
    """The runner's own path: no event within the interval, the quiet handler runs with
    the assignment, settles, and the events arriving after it are handled as ever."""
    topics = MemoryTopics(1)
    settlement = AtLeastOnce(topics, DeadLetters(topics, "unit"))
    calls: list[Assignment] = []
    release = asyncio.Event()
    assignment = Assignment(3, frozenset({0}))

    async def quiet(assigned: Assignment, in_flight: Prepared | None) -> Prepared:
        calls.append(assigned)
        release.set()
        return Prepared(await topics.send([]))

    class Arrivals:
        def __init__(self) -> None:
            self.rounds = 0
            self.acknowledged: list[Event] = []

        async def take(self, limit: int) -> list[Event]:
            self.rounds += 1
            if self.rounds == 1:
                await release.wait()
                return [Delivery(Record("t", 0, 0, b"k", b"v"))]
            return []

        def ack(self, event: Event) -> None:
            self.acknowledged.append(event)

        def held(self) -> Assignment:
            return assignment

    handled: list[Sequence[Event]] = []

    async def handler(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        handled.append(events)
        return Prepared(await topics.send([]))

    runner = EventRunner("a", settlement, Metrics(), 10, quiet=Quiet(0.001, quiet))
    arrivals = Arrivals()
    asyncio.run(runner.consume(arrivals, handler))
    assert calls[:1] == [assignment]
    assert [len(events) for events in handled] == [1]
    assert len(arrivals.acknowledged) == 1


def test_the_quiet_batch_runs_while_events_keep_arriving() -> None:
    """A busy partition must not keep an idle one's windows open: the quiet batch runs
    once every interval between batches, not only when no event arrives."""
    topics = MemoryTopics(1)
    settlement = AtLeastOnce(topics, DeadLetters(topics, "unit"))
    calls: list[int] = []
    handled: list[int] = []

    async def quiet(assigned: Assignment, in_flight: Prepared | None) -> Prepared:
        calls.append(len(handled))
        return Prepared(await topics.send([]))

    class Busy:
        async def take(self, limit: int) -> list[Event]:
            await asyncio.sleep(0)  # always an event waiting, until the quiet batch ran
            if calls or len(handled) > 10_000:
                return []
            return [Delivery(Record("t", 0, len(handled), b"k", b"v"))]

        def ack(self, event: Event) -> None:
            pass

        def held(self) -> Assignment:
            return Assignment(1, frozenset({0}))

    async def handler(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        handled.append(len(events))
        return Prepared(await topics.send([]))

    runner = EventRunner("a", settlement, Metrics(), 10, quiet=Quiet(0.001, quiet))
    asyncio.run(runner.consume(Busy(), handler))
    assert calls and calls[0] >= 1  # after at least one batch of events


def test_a_quiet_batch_whose_assignment_changed_meanwhile_is_not_settled() -> None:
    """A rebalance began while the quiet batch was prepared: its clocks are not written
    for partitions another worker may hold by now."""
    topics = MemoryTopics(1)
    settled: list[Prepared] = []

    class Recording(AtLeastOnce):
        async def settle(
            self, arrivals: Any, events: Sequence[Event], prepared: Prepared, agent: str
        ) -> None:
            settled.append(prepared)

    settlement = Recording(topics, DeadLetters(topics, "unit"))
    final = Outgoing("finals", b"k", b"v")

    async def quiet(assigned: Assignment, in_flight: Prepared | None) -> Prepared:
        return Prepared(await topics.send([final]), derived=[final])

    async def handler(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        raise AssertionError("no events")

    runner = EventRunner("a", settlement, Metrics(), 10, quiet=Quiet(1, quiet))

    class Rebalancing(Pending):
        """Held in generation 1 when the quiet batch begins, in 2 by the time it is ready."""

        def __init__(self) -> None:
            super().__init__((), Assignment(2, frozenset({0})))
            self.generations = iter([Assignment(1, frozenset({0})), self.assignment])

        def held(self) -> Assignment:
            return next(self.generations)

    asyncio.run(runner.quiet_batch(Rebalancing(), None, handler))
    assert settled == []
    asyncio.run(runner.quiet_batch(Pending((), Assignment(2, frozenset({0}))), None, handler))
    assert [prepared.derived for prepared in settled] == [[final]]
