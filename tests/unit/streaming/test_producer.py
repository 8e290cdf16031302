"""The batch producer's delivery reports, served by the event loop (no broker: a message
that cannot be delivered is reported failed once its timeout passes)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline.streaming.producer import (
    BatchProducer,
    DeliveryFailed,
    Outgoing,
    ProducerClosed,
)

# Nothing listens there: every message times out.
UNREACHABLE = {"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 200}


def test_reports_are_served_by_the_event_loop_and_only_while_some_are_due() -> None:
    async def scenario() -> None:
        producer = BatchProducer(UNREACHABLE)
        threads = set(threading.enumerate())
        delivery = await producer.send(
            [Outgoing("orders", b"k", b"v"), Outgoing("orders", b"k", b"w")]
        )
        with pytest.raises(DeliveryFailed) as failed:
            await asyncio.wait_for(delivery, 10)
        assert len(failed.value.errors) == 2
        assert set(threading.enumerate()) == threads  # no thread of ours serves them
        for _ in range(100):  # the serving task ends once no report is due
            if asyncio.all_tasks() == {asyncio.current_task()}:
                break
            await asyncio.sleep(0.01)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert producer.close(1) == 0

    asyncio.run(scenario())


def test_each_event_loop_gets_its_reports_served() -> None:
    producer = BatchProducer(UNREACHABLE)

    async def one_send() -> None:
        with pytest.raises(DeliveryFailed):
            await asyncio.wait_for(await producer.send([Outgoing("orders", b"k", b"v")]), 10)

    asyncio.run(one_send())
    asyncio.run(one_send())
    assert producer.close(1) == 0


def test_a_send_after_close_is_refused() -> None:
    async def scenario() -> None:
        producer = BatchProducer(UNREACHABLE)
        producer.close(1)
        with pytest.raises(ProducerClosed):
            await producer.send([Outgoing("orders", b"k", b"v")])

    asyncio.run(scenario())


class StampsSeen(Producer):
    """librdkafka's producer, noting the timestamp each message is produced with."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.stamps: list[int] = []

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.stamps.append(kwargs["timestamp"])
        super().produce(*args, **kwargs)


def test_a_record_goes_out_stamped_with_its_timestamp_or_librdkafkas_clock() -> None:
    producer = BatchProducer(UNREACHABLE)
    seen = producer._started = StampsSeen(UNREACHABLE)

    async def scenario() -> None:
        records = [Outgoing("orders", b"k", b"v", timestamp=1_796_655_600_001)]
        records.append(Outgoing("orders", b"k", b"w"))
        with pytest.raises(DeliveryFailed):
            await asyncio.wait_for(await producer.send(records), 10)

    asyncio.run(scenario())
    producer.close(1)
    assert seen.stamps == [1_796_655_600_001, 0]
