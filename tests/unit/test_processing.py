from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pipeline.dlq import DeadLetters
from pipeline.errors import NotConfluentFraming, RegistryUnavailable
from pipeline.metrics import Metrics
from pipeline.processing import Event, EventRunner


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
