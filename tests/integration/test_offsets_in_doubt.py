"""A commit in doubt, against the real broker: while a transaction's offsets are sent and
not yet committed, a plain offset fetch (all aiokafka can do) reads the offsets from before
it; ``wait_for_stable_offsets`` (pipeline.streaming.transactions), which a worker taking
partitions over runs before it restores its tables and fetches its offsets, returns only
once the transaction completed, and the offsets read then are the transaction's."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.streaming.producer import producer_config
from pipeline.streaming.transactions import TRANSACTION_TIMEOUT_MS, wait_for_stable_offsets
from tests.integration.conftest import StackInfo
from tests.integration.harness import transaction_topics

pytestmark = pytest.mark.integration

# How long the test holds its transaction's offsets pending.
IN_DOUBT_S = 2.0


def committed_offset(admin: AdminClient, group: str, topic: str) -> int:
    """The group's committed offset of ``topic``[0] as a plain fetch reads it."""
    request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])]
    (future,) = admin.list_consumer_group_offsets(request).values()
    (listed,) = future.result(30).topic_partitions or []
    return int(listed.offset)


def test_a_worker_taking_over_reads_offsets_only_once_a_commit_in_doubt_completed(
    stack: StackInfo,
) -> None:
    settings = stack.settings()
    topics = transaction_topics(settings, "in-doubt")
    name, source, sink, group = topics.name, topics.source, topics.sink, topics.group
    admin = AdminClient(settings.kafka_client_config())
    # The previous owner: a member of the group, its offsets sent to its open transaction.
    member = Consumer({**settings.kafka_client_config(), "group.id": group})
    member.subscribe([source])
    deadline = time.monotonic() + 60
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(0.2)
    assert member.assignment(), "the previous owner never joined its group"
    # Its producer: the offsets sent and the commit held back, as when the owner died with
    # its EndTxn on the way and the broker still writing the markers.
    producer = Producer(
        {
            **producer_config(settings),
            "transactional.id": name,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )
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
