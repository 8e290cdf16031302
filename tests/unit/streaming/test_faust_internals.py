from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock, Mock

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.streams import Stream
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.app import create_app
from pipeline.streaming.faust_internals import (
    FAUST_VERSION,
    FetchState,
    PipelineConsumer,
    PipelineConsumerThread,
    PipelineRecovery,
    PipelineTransport,
    fetch_states,
)

# Faust's code that pipeline.streaming.faust_internals replaces or relies on; a Faust upgrade
# that changes any of it fails here, so the fixes are compared with the new code.
UPSTREAM: dict[Callable[..., Any], str] = {
    Recovery.on_recovery_completed: (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    ),
    AIOKafkaConsumerThread._fetch_records: (
        "39a2c6c79fc1455a199629912b533458a720c64983bc957420a42feef6593baa"
    ),
    Consumer._new_consumer_thread: (
        "0870ec53dea75083995e3565c0f0a25a1c63ecceaeb238e92e2585e3623af5a9"
    ),
    BaseConsumer.ack: "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
    # Seeks only where the committed offset is above 0 (fix 3).
    AIOKafkaConsumer.seek_to_committed: (
        "f6cd85c8b70a4ccf7e862de24f6c5d985038eed3e140990f000aa4b52eda8d72"
    ),
    # Acknowledges the messages it skips (fix 4), and marks those it hands out tracked.
    Stream._py_aiter: "3a48ee257a65435b482d51edb74f2993a67867949b1ef89b49fea893769e0614",
}


def test_the_app_uses_the_fixes() -> None:
    app = create_app(shop(Settings(app_id="unit", topic_prefix="unit.")))
    assert isinstance(cast(Any, app.tables).recovery, PipelineRecovery)
    assert isinstance(app.transport, PipelineTransport)
    assert app.transport.Consumer is PipelineConsumer


def test_the_fixes_match_the_installed_faust() -> None:
    assert faust.__version__ == FAUST_VERSION, (
        f"faust-streaming {faust.__version__} is installed; pipeline.streaming.faust_internals "
        f"replaces code of {FAUST_VERSION}: compare it with the new one"
    )
    for function, digest in UPSTREAM.items():
        source = inspect.getsource(function)
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"Faust's {function.__qualname__} changed: "
            "compare it with pipeline.streaming.faust_internals"
        )


def fetching_thread(records: dict[TP, list[Any]]) -> tuple[PipelineConsumerThread, Mock]:
    """A consumer thread (not started) and the aiokafka consumer it fetches from."""
    thread = PipelineConsumerThread.__new__(PipelineConsumerThread)
    thread.consumer = Mock(flow_active=True)
    aiokafka_consumer = MagicMock(_closed=False)
    aiokafka_consumer._fetcher._closed = False
    aiokafka_consumer._fetcher.fetched_records = AsyncMock(return_value=records)
    return thread, aiokafka_consumer


def test_no_fetch_when_no_partition_is_active() -> None:
    """aiokafka reads an empty set as every partition and would hand back the paused
    ones' records, which Faust throws away."""
    thread, aiokafka_consumer = fetching_thread({TP("orders", 0): [object()]})
    records = asyncio.run(thread._fetch_records(aiokafka_consumer, set(), timeout=1.0))
    assert records == {}
    aiokafka_consumer._fetcher.fetched_records.assert_not_called()


def test_fetch_for_a_copy_of_the_active_partitions() -> None:
    """Faust's set changes while the fetch waits in the consumer thread."""
    active = {TP("orders", 0), TP("orders", 1)}
    thread, aiokafka_consumer = fetching_thread({TP("orders", 0): [object()]})
    asyncio.run(thread._fetch_records(aiokafka_consumer, active, timeout=1.0))
    (requested,), _ = aiokafka_consumer._fetcher.fetched_records.call_args
    assert requested == active and requested is not active


@pytest.mark.parametrize("recovery_class", [PipelineRecovery, Recovery])
def test_streams_resume_only_after_the_seek_and_the_queues_emptied(
    recovery_class: type[Recovery],
) -> None:
    """Faust resumes the streams, seeks (agents already get events), then empties the
    agents' queues, dropping events it never fetches again. The streams must stay
    paused until the seek is done and the queues are emptied."""
    calls: list[Any] = []
    stream, changelog = TP("orders", 0), TP("unit-stats-changelog", 0)
    committed, uncommitted = TP("orders", 1), TP("orders", 2)
    consumer = Mock(_committed_offset={committed: 40})
    consumer.assignment.return_value = {stream, committed, uncommitted, changelog}

    async def perform_seek() -> None:
        calls.append("perform_seek")

    async def seek_to_beginning(*tps: TopicPartition) -> None:
        assert all(isinstance(tp, TopicPartition) for tp in tps)  # aiokafka's, not Faust's
        calls.append(("seek to beginning", set(tps)))

    consumer.perform_seek = perform_seek
    consumer._thread.seek_to_beginning = seek_to_beginning
    consumer.resume_partitions.side_effect = lambda tps: calls.append(("resume", set(tps)))
    consumer.resume_flow.side_effect = lambda: calls.append("resume_flow")
    app = Mock(consumer=consumer, consumer_generation_id=3)
    app.on_rebalance_complete.send = AsyncMock()
    app.flow_control.resume.side_effect = lambda: calls.append("empty queues")
    app._fetcher.maybe_start = AsyncMock()
    app.assignor.assigned_standbys.return_value = set()

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    recovery = SimpleNamespace(
        app=app,
        log=Mock(),
        tables=Mock(values=Mock(return_value=[])),
        actives_for_table={},
        standbys_for_table={},
        completed=asyncio.Event(),
        _set_recovery_ended=Mock(),
        _wait=wait,
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
    )
    asyncio.run(recovery_class.on_recovery_completed(recovery, 3))  # type: ignore[arg-type]

    streams = {stream, committed, uncommitted}
    if recovery_class is PipelineRecovery:
        # Partitions without a committed offset go back to their beginning (fix 3).
        assert calls == [
            "perform_seek",
            ("seek to beginning", {stream, uncommitted}),
            "empty queues",
            ("resume", streams),
            "resume_flow",
        ]
        assert recovery.completed.is_set()
        app.on_rebalance_end.assert_called_once_with()
    else:  # Faust's own: the streams run during the seek, then their queues are emptied
        assert calls == [("resume", streams), "perform_seek", "empty queues", "resume_flow"]


def consumer_counting_acks() -> PipelineConsumer:
    """A consumer (not started) with the state Faust's ``ack`` keeps."""
    consumer = PipelineConsumer.__new__(PipelineConsumer)
    consumer.app = Mock()
    consumer.app.topics.acks_enabled_for.return_value = True
    consumer._committed_offset = defaultdict(lambda: None)
    consumer._acked = defaultdict(list)
    consumer._acked_index = defaultdict(set)
    consumer._unacked_messages = set()
    consumer._n_acked = 0
    consumer._waiting_for_ack = None
    return consumer


def message(offset: int, *, tracked: bool) -> ConsumerMessage:
    received = ConsumerMessage("orders", 0, offset, 0.0, None, None, b"k", b"v", None)
    received.tracked = tracked
    return received


def test_an_ack_counts_only_for_a_message_a_stream_handed_out() -> None:
    """A stream acknowledges the messages it skips (stale generation, stopped flow):
    their offsets must not reach a commit (fix 4)."""
    consumer = consumer_counting_acks()
    handed_out, skipped = message(3, tracked=True), message(4, tracked=False)
    assert consumer.ack(handed_out) is True
    assert consumer.ack(skipped) is False
    assert consumer._acked[TP("orders", 0)] == [3]


def test_fetch_states_read_aiokafkas_subscription_state() -> None:
    orders_0, orders_1 = TopicPartition("order_created", 0), TopicPartition("order_created", 1)

    async def read() -> dict[TP, FetchState]:
        subscription = SubscriptionState()
        subscription.subscribe({"order_created"})
        subscription.assign_from_subscribed({orders_0, orders_1})
        fetched = subscription.subscription.assignment.state_value(orders_0)
        fetched.reset_to(40)
        fetched.highwater = 45
        # orders_1 has no position yet (waiting for its committed offset): left out.
        consumer = SimpleNamespace(_subscription=subscription)
        app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))
        return fetch_states(cast(Any, app))

    assert asyncio.run(read()) == {TP("order_created", 0): FetchState(position=40, highwater=45)}


def test_fetch_states_before_the_consumer_started_are_none() -> None:
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert fetch_states(cast(Any, app)) == {}
