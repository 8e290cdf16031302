"""What the agents share: the codec, the producer and the topic names.

Derived events (and the changelog records of the rows they go with) are sent and
*acknowledged* before the table write that records the source event as applied
(see pipeline.domain.rules): a crash in between replays the source event, which re-sends
the derived events (a duplicate, never a loss) and then applies the table change
once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pipeline.streaming.metrics import Metrics
from pipeline.streaming.producer import BatchProducer, Delivered, Outgoing
from pipeline.topics import TopicNames


class RecordCodec(Protocol):
    """Avro in Confluent wire format, by topic (the codec module implements it)."""

    async def decode(self, topic: str, data: bytes | None) -> dict[str, Any]: ...

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes: ...


def millis(value: datetime | int) -> int:
    """A timestamp-millis field as decoded (datetime) or as given (int), in ms."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


@dataclass(frozen=True)
class Outputs:
    producer: BatchProducer
    codec: RecordCodec
    names: TopicNames
    metrics: Metrics

    def record(self, topic: str, key: str, record: Mapping[str, Any]) -> Outgoing:
        return Outgoing(topic, key.encode(), self.codec.encode(topic, record))

    async def send(self, messages: Sequence[Outgoing]) -> asyncio.Future[Delivered]:
        """Hand ``messages`` to the producer; the future resolves once the broker
        acknowledged every one."""
        for topic, count in Counter(message.topic for message in messages).items():
            self.metrics.derived_events.labels(topic).inc(count)
        return await self.producer.send(messages)
