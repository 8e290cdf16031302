"""A commit in doubt, against the real broker: while a transaction's offsets are sent and
not yet committed, a plain offset fetch (all aiokafka can do) reads the offsets from before
it; ``wait_for_stable_offsets`` (pipeline.streaming.transactions), which a worker taking
partitions over runs before it restores its tables and fetches its offsets, returns only
once the transaction completed, and the offsets read then are the transaction's. A worker
whose takeover waits so for longer than its session timeout keeps its group membership
(pipeline.engine, fix 6)."""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import wait_for
from pipeline.kafka.topics import ensure_topics
from pipeline.services import shop as shop_topology
from pipeline.settings import Settings
from pipeline.streaming.producer import producer_config
from pipeline.streaming.transactions import TRANSACTION_TIMEOUT_MS, wait_for_stable_offsets
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, transaction_topics, views_match

pytestmark = pytest.mark.integration

# How long the test holds its transaction's offsets pending.
IN_DOUBT_S = 2.0


def committed_offset(admin: AdminClient, group: str, topic: str) -> int:
    """The group's committed offset of ``topic``[0] as a plain fetch reads it."""
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
    (future,) = admin.list_consumer_group_offsets(request).values()
    (listed,) = future.result(30).topic_partitions or []
    return int(listed.offset)


def joined_member(settings: Settings, group: str, topic: str) -> Consumer:
    """A consumer of ``topic`` that joined ``group`` and holds its partitions."""
    member = Consumer({**settings.kafka_client_config(), "group.id": group})
    member.subscribe([topic])
    deadline = time.monotonic() + 60
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), f"the previous owner never joined {group}"
    return member


def transactional_producer(settings: Settings, transactional_id: str) -> Producer:
    return Producer(
        {
            **producer_config(settings),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )


def test_a_worker_taking_over_reads_offsets_only_once_a_commit_in_doubt_completed(
    stack: StackInfo,
) -> None:
    settings = stack.settings()
    topics = transaction_topics(settings, "in-doubt")
    name, source, sink, group = topics.name, topics.source, topics.sink, topics.group
    admin = AdminClient(settings.kafka_client_config())
    # The previous owner: a member of the group, its offsets sent to its open transaction.
    member = joined_member(settings, group, source)
    # Its producer: the offsets sent and the commit held back, as when the owner died with
    # its EndTxn on the way and the broker still writing the markers.
    producer = transactional_producer(settings, name)
    commit_started: list[float] = []
    try:
        producer.init_transactions(30)
        producer.begin_transaction()
        producer.produce(sink, b"derived", b"k")
        producer.flush(30)
        producer.send_offsets_to_transaction(
            [TopicPartition(source, 0, 42)], member.consumer_group_metadata(), 30
        )
        before = committed_offset(admin, group, source)

        def complete_the_commit() -> None:
            time.sleep(IN_DOUBT_S)
            commit_started.append(time.monotonic())
            producer.commit_transaction(30)

        completing = threading.Thread(target=complete_the_commit)
        completing.start()
        waited = wait_for_stable_offsets(admin, group, {(source, 0)})
        returned = time.monotonic()
        completing.join(60)
        after = committed_offset(admin, group, source)
    finally:
        member.close()
        producer.flush(10)
    assert before < 0  # a plain fetch in doubt: nothing committed yet, read from the start
    assert commit_started and returned >= commit_started[0], (
        f"returned after {waited:.2f} s, before the commit was even sent"
    )
    assert after == 42


# Longer than a worker's session timeout (pipeline.streaming.app: 15 s).
LONG_IN_DOUBT_S = 20.0


def joined(admin: AdminClient, group: str) -> bool:
    """Whether ``group`` has a member that finished joining (its assignment callback runs)."""
    (future,) = admin.describe_consumer_groups([group]).values()
    description = future.result(30)
    return bool(description.members) and description.state == ConsumerGroupState.STABLE


@pytest.mark.timeout(300)
def test_a_worker_keeps_its_membership_while_it_waits_longer_than_its_session_timeout(
    stack: StackInfo, tmp_path: Path
) -> None:
    """The wait runs in the worker's assignment callback, where aiokafka would not heartbeat:
    the broker dropped such a worker and refused its next transaction (UNKNOWN_MEMBER_ID)."""
    shop = deployment(stack, f"it-long-doubt-{uuid.uuid4().hex[:8]}", tmp_path, "exactly_once")
    settings, group = shop.settings, shop.settings.app_id
    ensure_topics(settings, shop_topology(settings).specs())
    source = shop.names.order_created
    admin = AdminClient(settings.kafka_client_config())
    member = joined_member(settings, group, source)
    producer = transactional_producer(settings, f"{group}-previous-owner")
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.send_offsets_to_transaction(
        [TopicPartition(source, 0, 0)], member.consumer_group_metadata(), 30
    )
    member.close()  # gone, its commit in doubt
    worker = shop.worker("w").start()
    try:
        wait_for("the worker to join its group", lambda: joined(admin, group), 120)
        time.sleep(LONG_IN_DOUBT_S)
        producer.commit_transaction(30)
        worker.wait_healthy()
        events = list(generate(LoadConfig(users=20, orders=300, skus=10, seed=5)))
        assert send(events, settings, progress=False).failed == 0
        wait_for("the views to match the input", lambda: views_match(worker, events), 120)
        assert worker.running()
        assert worker.metric("pipeline_rebalances_total") == 1
        log = worker.log.read_text(errors="replace")
        waited = re.search(r"offsets of a transaction in doubt are settled after ([\d.]+) s", log)
        assert waited and float(waited[1]) > 15.0, "the worker did not wait for the commit"
        assert "member_id was not recognized" not in log
    finally:
        worker.stop()
