"""Where the pipeline's consumers stand: watermarks, record counts, committed offsets, lag."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

LEADERLESS = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)


def watermarks(consumer: Consumer, topic: str, timeout: float = 30.0) -> dict[int, tuple[int, int]]:
    """(low, high) offsets by partition; {} for a topic that does not exist."""
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return {}
    result: dict[int, tuple[int, int]] = {}
    for partition in metadata.partitions:
        for attempt in range(1, 21):
            try:
                result[partition] = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout
                )
                break
            except KafkaException as error:
                # A topic created a moment ago may not have elected its leaders yet
                # (librdkafka does not flag these as retriable here).
                if error.args[0].code() not in LEADERLESS or attempt == 20:
                    raise
                time.sleep(0.5)
    return result


def record_count(consumer: Consumer, topic: str, timeout: float = 30.0) -> int:
    """Records ``topic`` holds now (0 for a topic that does not exist)."""
    return sum(high - low for low, high in watermarks(consumer, topic, timeout).values())


def committed_offsets(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    """The offsets ``group`` has committed, by (topic, partition)."""
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in future.result().topic_partitions or []
        if tp.offset >= 0
    }


def lag_by_partition(
    admin: AdminClient, consumer: Consumer, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], tuple[int, int]]:
    """(committed, end) of every partition of ``topics`` that ``group`` has not fully
    committed. ``consumer`` must read ``read_committed`` with ``enable.partition.eof``
    (see :func:`record_at_or_after`)."""
    committed = committed_offsets(admin, group)
    behind = {}
    for topic in topics:
        for partition, (_, end) in watermarks(consumer, topic).items():
            done = committed.get((topic, partition), 0)
            if done < end and record_at_or_after(consumer, topic, partition, done):
                behind[(topic, partition)] = (done, end)
    return behind


def record_at_or_after(consumer: Consumer, topic: str, partition: int, offset: int) -> bool:
    """Whether a committed record is at ``offset`` or later. A partition written in
    transactions (exactly_once: the re-keyed order lines) ends with a commit marker, which
    takes an offset but is no record: its end is one past what the group ever commits.
    ``consumer`` must read ``read_committed`` with ``enable.partition.eof``."""
    consumer.assign([TopicPartition(topic, partition, offset)])
    try:
        while True:
            message = consumer.poll(10)
            if message is None:
                return True  # nothing said yet: count it as behind
            error = message.error()
            if error is None:
                return True
            if error.code() == KafkaError._PARTITION_EOF:
                return False
    finally:
        consumer.unassign()


class EndOffsets:
    """Partition end offsets (high watermarks), asked of the broker and kept for ``ttl``
    seconds: what a table view compares a local copy's offset with to say how far behind
    it is. Blocking: call it from a thread."""

    def __init__(self, config: Mapping[str, Any], ttl: float = 1.0, timeout: float = 2.0) -> None:
        self._config = {**config, "group.id": "pipeline-end-offsets", "enable.auto.commit": False}
        self._consumer: Consumer | None = None
        self._ttl = ttl
        self._timeout = timeout
        self._known: dict[tuple[str, int], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def end(self, topic: str, partition: int) -> int | None:
        """The offset the next record of ``topic[partition]`` will get; None when the
        broker does not answer in time."""
        now = time.monotonic()
        with self._lock:
            known = self._known.get((topic, partition))
            if known is not None and now - known[0] < self._ttl:
                return known[1]
            if self._consumer is None:
                self._consumer = Consumer(dict(self._config))
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=self._timeout, cached=False
                )
            except KafkaException:
                return None
            self._known[topic, partition] = (now, high)
            return int(high)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
