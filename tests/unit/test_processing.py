from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

from faust.types import Message

from pipeline.dlq import DeadLetters
from pipeline.errors import NotConfluentFraming, RegistryUnavailable
from pipeline.metrics import Metrics
from pipeline.processing import EventRunner


@dataclass
class RecordingDeadLetters:
    sent: list[tuple[BaseException, int]] = field(default_factory=list)

    async def send(self, message: Any, error: BaseException, attempts: int) -> None:
        self.sent.append((error, attempts))


@dataclass
class FakeMessage:
    topic: str = "order_created"
    partition: int = 3
    offset: int = 42


def run(failures: list[BaseException]) -> tuple[int, RecordingDeadLetters]:
    """Run a handler that raises ``failures`` one per attempt, then succeeds."""
    dead_letters = RecordingDeadLetters()
    runner = EventRunner(
        dead_letters=cast(DeadLetters, dead_letters), metrics=Metrics(), backoff=(0, 0, 0)
    )
    attempts = 0

    async def handler(message: Message) -> None:
        nonlocal attempts
        attempts += 1
        if failures:
            raise failures.pop(0)

    asyncio.run(runner.run(cast(Message, FakeMessage()), handler))
    return attempts, dead_letters


def test_transient_failure_is_retried_until_it_succeeds() -> None:
    attempts, dead_letters = run([RuntimeError("broker away"), RegistryUnavailable("down")])
    assert attempts == 3
    assert dead_letters.sent == []


def test_persistent_failure_is_dead_lettered_after_bounded_attempts() -> None:
    errors: list[BaseException] = [RuntimeError(f"boom {n}") for n in range(10)]
    attempts, dead_letters = run(errors)
    assert attempts == 4
    ((error, recorded_attempts),) = dead_letters.sent
    assert (str(error), recorded_attempts) == ("boom 3", 4)


def test_undecodable_message_is_dead_lettered_at_once() -> None:
    attempts, dead_letters = run([NotConfluentFraming("first byte is 0x6e")])
    assert attempts == 1
    assert [(type(e).__name__, n) for e, n in dead_letters.sent] == [("NotConfluentFraming", 1)]


def test_a_key_that_is_not_utf8_is_dead_lettered_at_once() -> None:
    attempts, dead_letters = run([UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")])
    assert attempts == 1
    assert [(type(e).__name__, n) for e, n in dead_letters.sent] == [("UnicodeDecodeError", 1)]
