from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from faust.types import StreamT

from pipeline.dlq import DeadLetters
from pipeline.errors import NotConfluentFraming, RegistryUnavailable
from pipeline.metrics import Metrics
from pipeline.processing import Event, EventRunner, batches


@dataclass
class RecordingDeadLetters:
    sent: list[tuple[int, BaseException, int]] = field(default_factory=list)

    async def send(self, message: Any, error: BaseException, attempts: int) -> None:
        self.sent.append((message.offset, error, attempts))


@dataclass
class FakeMessage:
    offset: int
    topic: str = "order_created"
    partition: int = 3


@dataclass
class FakeEvent:
    message: FakeMessage


def runner() -> tuple[EventRunner, RecordingDeadLetters]:
    dead_letters = RecordingDeadLetters()
    return (
        EventRunner(
            dead_letters=cast(DeadLetters, dead_letters), metrics=Metrics(), backoff=(0, 0, 0)
        ),
        dead_letters,
    )


def events(*offsets: int) -> list[Event]:
    return [cast(Event, FakeEvent(FakeMessage(offset))) for offset in offsets]


def run_one(failures: list[BaseException]) -> tuple[int, RecordingDeadLetters]:
    """Run a handler that raises ``failures`` one per attempt, then succeeds."""
    event_runner, dead_letters = runner()
    attempts = 0

    async def handler(batch: Sequence[Event]) -> None:
        nonlocal attempts
        attempts += 1
        if failures:
            raise failures.pop(0)

    asyncio.run(event_runner.run(events(42)[0], handler))
    return attempts, dead_letters


def test_transient_failure_is_retried_until_it_succeeds() -> None:
    attempts, dead_letters = run_one([RuntimeError("broker away"), RegistryUnavailable("down")])
    assert attempts == 3
    assert dead_letters.sent == []


def test_persistent_failure_is_dead_lettered_after_bounded_attempts() -> None:
    attempts, dead_letters = run_one([RuntimeError(f"boom {n}") for n in range(10)])
    assert attempts == 4
    ((offset, error, recorded_attempts),) = dead_letters.sent
    assert (offset, str(error), recorded_attempts) == (42, "boom 3", 4)


def test_undecodable_message_is_dead_lettered_at_once() -> None:
    attempts, dead_letters = run_one([NotConfluentFraming("first byte is 0x6e")])
    assert attempts == 1
    assert [(type(e).__name__, n) for _, e, n in dead_letters.sent] == [("NotConfluentFraming", 1)]


def test_a_key_that_is_not_utf8_is_dead_lettered_at_once() -> None:
    attempts, dead_letters = run_one(
        [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")]
    )
    assert attempts == 1
    assert [(type(e).__name__, n) for _, e, n in dead_letters.sent] == [("UnicodeDecodeError", 1)]


def test_a_failed_batch_is_handled_event_by_event_and_only_the_bad_one_dead_lettered() -> None:
    event_runner, dead_letters = runner()
    handled: list[list[int]] = []

    async def handler(batch: Sequence[Event]) -> None:
        offsets = [event.message.offset for event in batch]
        if 11 in offsets:
            raise NotConfluentFraming("poison at 11")
        handled.append(offsets)

    asyncio.run(event_runner.run_batch(events(10, 11, 12), handler))
    assert handled == [[10], [12]]
    assert [(offset, attempts) for offset, _, attempts in dead_letters.sent] == [(11, 1)]


class FakeQueue:
    def __init__(self) -> None:
        self.items: list[Event] = []

    def empty(self) -> bool:
        return not self.items


@dataclass
class FakeChannel:
    queue: FakeQueue = field(default_factory=FakeQueue)


class FakeStream:
    """What ``batches`` uses of a Faust stream: noack(), events(), ack() and the
    channel's queue of events already fetched."""

    def __init__(self, arrivals: list[list[int]]) -> None:
        # Each inner list arrives at once: all of it is waiting in the queue.
        self.arrivals = arrivals
        self.channel = FakeChannel()
        self.acked: list[int] = []
        self.log: list[str] = []

    def noack(self) -> FakeStream:
        return self

    async def events(self) -> AsyncIterator[Event]:
        for arrival in self.arrivals:
            self.channel.queue.items = events(*arrival)
            while self.channel.queue.items:
                event = self.channel.queue.items.pop(0)
                self.log.append(f"deliver {event.message.offset}")
                yield event

    async def ack(self, event: Event) -> bool:
        self.log.append(f"ack {event.message.offset}")
        self.acked.append(event.message.offset)
        return True


def collect(stream: FakeStream, max_size: int) -> list[list[int]]:
    async def go() -> list[list[int]]:
        seen = []
        async for batch in batches(cast(StreamT[Any], stream), max_size):
            seen.append([event.message.offset for event in batch])
            stream.log.append(f"handled {seen[-1]}")
        return seen

    return asyncio.run(go())


def test_batches_take_what_already_arrived_up_to_the_maximum() -> None:
    stream = FakeStream([[1, 2, 3, 4, 5], [6], [7, 8]])
    assert collect(stream, max_size=2) == [[1, 2], [3, 4], [5], [6], [7, 8]]
    assert stream.acked == list(range(1, 9))


def test_batch_events_are_acknowledged_only_after_the_batch_was_handled() -> None:
    stream = FakeStream([[1, 2], [3]])
    collect(stream, max_size=10)
    assert stream.log == [
        "deliver 1",
        "deliver 2",
        "handled [1, 2]",
        "ack 1",
        "ack 2",
        "deliver 3",
        "handled [3]",
        "ack 3",
    ]


def test_a_batch_abandoned_mid_way_is_never_acknowledged() -> None:
    stream = FakeStream([[1, 2], [3]])

    async def crash_in_second_batch() -> None:
        async for batch in batches(cast(StreamT[Any], stream), 10):
            if batch[0].message.offset == 3:
                raise RuntimeError("worker dies")

    with pytest.raises(RuntimeError):
        asyncio.run(crash_in_second_batch())
    assert stream.acked == [1, 2]
