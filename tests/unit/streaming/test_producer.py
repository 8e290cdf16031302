"""The batch producer's delivery reports, served by the event loop (no broker: a message
that cannot be delivered is reported failed once its timeout passes)."""

from __future__ import annotations

import asyncio
import threading

import pytest

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
