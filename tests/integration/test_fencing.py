"""KIP-447 fencing through our group metadata, against the real broker: offsets sent to a
transaction under the membership an aiokafka consumer really holds are committed; under a
generation the group has moved past they are rejected, and nothing of that transaction is
visible to a read_committed reader.

This pins ``group_metadata`` (pipeline.streaming.transactions) with a real generation and
member id, beyond the start-up check (which can only compare a consumer that has not joined).
"""

from __future__ import annotations

import asyncio

import aiokafka
import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.dev.audit import read_topic
from pipeline.streaming.ports import GroupMember
from pipeline.streaming.producer import Outgoing, producer_config
from pipeline.streaming.transactions import (
    TRANSACTION_TIMEOUT_MS,
    TransactionalProducer,
    group_metadata,
)
from tests.integration.conftest import StackInfo
from tests.integration.harness import transaction_topics

pytestmark = pytest.mark.integration


def test_offsets_are_committed_under_the_members_generation_and_refused_under_a_stale_one(
    stack: StackInfo,
) -> None:
    settings = stack.settings()
    topics = transaction_topics(settings, "fencing")
    name, source, sink, group = topics.name, topics.source, topics.sink, topics.group
    producer = TransactionalProducer(
        {
            **producer_config(settings),
            "transactional.id": name,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        }
    )

    async def scenario() -> list[str]:
        consumer = aiokafka.AIOKafkaConsumer(
            source,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            while not consumer.assignment():
                await consumer.getmany(timeout_ms=200)
            coordinator = consumer._coordinator
            member = GroupMember(group, coordinator.generation, coordinator.member_id, None)
            await asyncio.to_thread(producer.init)
            outcomes = []
            for generation in (member.generation_id, member.generation_id + 1):
                producer.begin()
                await (await producer.send([Outgoing(sink, b"k", str(generation).encode())]))
                metadata = group_metadata(GroupMember(group, generation, member.member_id, None))
                try:
                    offsets = {(source, 0): generation}
                    await asyncio.to_thread(producer.send_offsets, offsets, metadata)
                    await asyncio.to_thread(producer.commit)
                    outcomes.append("committed")
                except KafkaException as error:
                    outcomes.append(error.args[0].name())
                    await asyncio.to_thread(producer.abort, 30.0)
            return outcomes
        finally:
            await consumer.stop()

    try:
        committed, stale = asyncio.run(scenario())
    finally:
        producer.close()
    assert committed == "committed"
    assert stale in {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID"}, stale
    reader = Consumer({**settings.kafka_client_config(), "group.id": group})
    try:
        (position,) = reader.committed([TopicPartition(source, 0)], timeout=30)
    finally:
        reader.close()
    values = [record.value for record in read_topic(settings, sink)]
    assert len(values) == 1  # the refused transaction's record was aborted
    assert position.offset == int(values[0] or b"0")  # the first transaction's offset
