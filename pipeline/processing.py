"""How every agent handles one event: bounded retries, then the dead-letter topic.

A handler that raises is retried with a growing pause (transient trouble: the
registry or the broker briefly away); after the last attempt the message is
dead-lettered and the agent moves on, so one bad message never blocks its
partition. A message that cannot be decoded is not retried: the same bytes will
never decode, so it goes to the dead-letter topic at once.

Events are handled one at a time (``stream.events()``). Batching with Faust's
``take_events`` was tried and reverted: in the SIGKILL crash test a batched worker
never processed one stock_adjusted message (no error, no dead letter; compare
robinhood/faust issue 656 on ``take()`` skipping messages).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from faust.types import Message

from pipeline.dlq import DeadLetters, error_class_of
from pipeline.encoding import EncodingError
from pipeline.errors import PipelineCodecError, RegistryUnavailable
from pipeline.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[Message], Awaitable[None]]


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

    async def run(self, message: Message, handler: Handler) -> None:
        self.metrics.events_processed.labels(message.topic).inc()
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(message)
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
