from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast
from unittest.mock import AsyncMock, MagicMock, Mock

import aiokafka
import faust
import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer
from faust.types import TP

from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.app import create_app
from pipeline.streaming.faust_internals import (
    FAUST_VERSION,
    FetchState,
    GroupMember,
    PipelineConsumer,
    PipelineConsumerThread,
    PipelineRecovery,
    PipelineTransport,
    TransactionalConsumer,
    TransactionalConsumerThread,
    TransactionalTransport,
    fetch_states,
    group_member,
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
    # exactly_once: the consumer made read_committed, Faust's commit replaced, the group
    # membership read from aiokafka's coordinator.
    AIOKafkaConsumerThread._create_worker_consumer: (
        "c2701bfc3e6f6cad95c2be36d6a255a86e2c57d18d36cc1082b5fb5c482d99d7"
    ),
    FaustConsumer.commit: "a354437baaa08bf8096d978ca195963e22f7a497d18392960dd53dacb7c9f2d8",
    aiokafka.AIOKafkaConsumer.__init__: (
        "01506f316191f7c99c785bec915756d1560029a6fad75cba6f4da71e343a8163"
    ),
    GroupCoordinator.__init__: "9e729f077efc4f3a4f3e672047bcdde1f557517f9417415245af851ac25e44fd",
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
    consumer = Mock()
    consumer.assignment.return_value = {stream, changelog}

    async def perform_seek() -> None:
        calls.append("perform_seek")

    consumer.perform_seek = perform_seek
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

    safe_order = ["perform_seek", "empty queues", ("resume", {stream}), "resume_flow"]
    if recovery_class is PipelineRecovery:
        assert calls == safe_order
        assert recovery.completed.is_set()
        app.on_rebalance_end.assert_called_once_with()
    else:  # Faust's own: the streams run during the seek, then their queues are emptied
        assert calls == [("resume", {stream}), "perform_seek", "empty queues", "resume_flow"]


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


def test_under_exactly_once_the_consumer_reads_committed_records_and_faust_commits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = create_app(shop(Settings(app_id="unit", processing_guarantee="exactly_once")))
    assert isinstance(app.transport, TransactionalTransport)
    assert app.transport.Consumer is TransactionalConsumer

    async def made() -> Any:
        # What Faust makes (read_uncommitted), as aiokafka keeps it until its Fetcher starts.
        made = aiokafka.AIOKafkaConsumer(isolation_level="read_uncommitted")
        monkeypatch.setattr(
            PipelineConsumerThread, "_create_worker_consumer", lambda self, transport: made
        )
        thread = TransactionalConsumerThread.__new__(TransactionalConsumerThread)
        return thread._create_worker_consumer(cast(Any, None))

    assert asyncio.run(made())._isolation_level == "read_committed"
    assert asyncio.run(TransactionalConsumer.commit(cast(Any, None))) is False


def test_the_group_membership_is_read_from_aiokafkas_coordinator() -> None:
    coordinator = GroupCoordinator.__new__(GroupCoordinator)
    coordinator.group_id, coordinator.generation, coordinator.member_id = "unit", 4, "m-1"
    coordinator._group_instance_id = "worker-1"
    consumer = SimpleNamespace(_coordinator=coordinator)
    app = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=consumer)))
    assert group_member(cast(Any, app)) == GroupMember("unit", 4, "m-1", "worker-1")
    idle = SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_consumer=None)))
    assert group_member(cast(Any, idle)) is None
