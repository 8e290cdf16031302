"""Readers of what the workers produced, and polling.

Workers run as separate processes (pipeline.dev.workers); each test deployment has its own app id
and topic prefix, so tests never see each other's topics, consumer groups or table state.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.admin.offsets import watermarks
from pipeline.dev.loadgen import ShopEvent
from pipeline.dev.workers import Deployment, WorkerProcess
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from tests.integration import expected
from tests.integration.conftest import StackInfo


def deployment(
    stack: StackInfo, name: str, root: Path, guarantee: str = "at_least_once"
) -> Deployment:
    """A deployment of its own (app id and topic prefix) on the session's stack."""
    return Deployment(
        name=name,
        root=root,
        base_env=stack.env,
        extra_env={"PIPELINE_PROCESSING_GUARANTEE": guarantee},
    )


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every committed record of ``topic`` from the start up to its current end, by
    partition (``read_committed``: nothing of an aborted or open transaction). The end is
    where the consumer says it is: the last offset of a partition may be a transaction's
    commit marker, which is never delivered."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"test-reader-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    records: list[Record] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        for partition in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            while True:
                message = consumer.poll(30)
                assert message is not None, f"{topic}[{partition}]: nothing at {offset}"
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    break
                assert error is None, error
                offset = (message.offset() or 0) + 1
                found = message.headers() or []
                pairs = list(found.items()) if isinstance(found, dict) else list(found)
                headers = [
                    (name, value.encode() if isinstance(value, str) else (value or b""))
                    for name, value in pairs
                ]
                key, value = message.key(), message.value()
                records.append(
                    Record(
                        partition,
                        offset - 1,
                        key.encode() if isinstance(key, str) else key,
                        value.encode() if isinstance(value, str) else value,
                        headers,
                    )
                )
    finally:
        consumer.close()
    return records


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-watermarks"})
    try:
        return {partition: high for partition, (_, high) in watermarks(consumer, topic).items()}
    finally:
        consumer.close()


def decoded(codecs: Codecs, topic: str, records: Iterable[Record]) -> list[dict[str, Any]]:
    """Records in partition order, decoded synchronously (our own schema ids are cached)."""
    codec = codecs[topic]
    return [codec.decode(record.value or b"") for record in records]


def views_match(worker: WorkerProcess, events: list[ShopEvent]) -> bool:
    for user_id, user in expected.user_stats(events).items():
        status, body = worker.get(f"/users/{user_id}/orders")
        if status != 200 or (body["order_count"], body["total_spent_cents"]) != (
            user.order_count,
            user.total_spent_cents,
        ):
            return False
    for sku, available in expected.stock(events).items():
        status, body = worker.get(f"/stock/{sku}")
        if status != 200 or body["available"] != available:
            return False
    return True


def points_match(worker: WorkerProcess, events: list[ShopEvent]) -> bool:
    """Every user's points, as the points service answers them, equal what the orders imply."""
    for user_id, points in expected.points(events).items():
        status, body = worker.get(f"/users/{user_id}/points")
        if status != 200 or body["points"] != points:
            return False
    return True
