"""Every topic of the pipeline in one place: names, records, partition counts, creation.

The broker does not create topics on demand, so a worker creates whatever is
missing before it starts consuming, and refuses to start when an existing topic's
partition count would break co-partitioning: a table writes its changelog to the
partition of the event being processed, so every topic that feeds a table must
have exactly as many partitions as the table's changelog.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.settings import Settings

USER_STATS_TABLE = "user_order_stats"
STOCK_TABLE = "stock"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    # Fully qualified Avro record of the value, or None for the internal encoding.
    record: str | None
    # Topics in the same group must have the same partition count (co-partitioning).
    copartition_group: str | None = None
    compacted: bool = False


class TopicLayoutError(RuntimeError):
    """An existing topic's partition count breaks co-partitioning; the message says which."""


@dataclass(frozen=True)
class TopicNames:
    """The names of all topics for one deployment (app id and optional prefix)."""

    prefix: str
    app_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(prefix=settings.topic_prefix, app_id=settings.app_id)

    def _contract(self, name: str) -> str:
        return self.prefix + name

    @property
    def user_registered(self) -> str:
        return self._contract("user_registered")

    @property
    def order_created(self) -> str:
        return self._contract("order_created")

    @property
    def stock_adjusted(self) -> str:
        return self._contract("stock_adjusted")

    @property
    def user_order_stats(self) -> str:
        return self._contract("user_order_stats")

    @property
    def stock_levels(self) -> str:
        return self._contract("stock_levels")

    @property
    def low_stock_alerts(self) -> str:
        return self._contract("low_stock_alerts")

    @property
    def notifications(self) -> str:
        return self._contract("notifications")

    @property
    def order_lines_by_sku(self) -> str:
        """Internal repartition topic: order lines re-keyed by SKU (see pipeline.lines)."""
        return f"{self.app_id}-order_lines_by_sku"

    def changelog(self, table: str) -> str:
        # Faust's own naming, so its table machinery finds the topics we create.
        return f"{self.app_id}-{table}-changelog"

    @staticmethod
    def dead_letters(topic: str) -> str:
        return f"{topic}.dlq"

    @property
    def consumed(self) -> tuple[str, ...]:
        """Topics the agents read; each has a dead-letter topic."""
        return (
            self.user_registered,
            self.order_created,
            self.stock_adjusted,
            self.order_lines_by_sku,
        )

    def specs(self) -> list[TopicSpec]:
        users = "by_user_id"
        skus = "by_sku"
        specs = [
            TopicSpec(self.user_registered, "shop.UserRegistered"),
            TopicSpec(self.order_created, "shop.OrderCreated", users),
            TopicSpec(self.stock_adjusted, "shop.StockAdjusted", skus),
            TopicSpec(self.user_order_stats, "shop.UserOrderStats"),
            TopicSpec(self.stock_levels, "shop.StockLevel"),
            TopicSpec(self.low_stock_alerts, "shop.LowStockAlert"),
            TopicSpec(self.notifications, "shop.NotificationRequested"),
            TopicSpec(self.order_lines_by_sku, None, skus),
            TopicSpec(self.changelog(USER_STATS_TABLE), None, users, compacted=True),
            TopicSpec(self.changelog(STOCK_TABLE), None, skus, compacted=True),
        ]
        specs += [TopicSpec(self.dead_letters(name), None) for name in self.consumed]
        return specs


def copartitioning_problems(
    specs: Iterable[TopicSpec], partitions: Mapping[str, int], expected: int
) -> list[str]:
    """What is wrong with the existing partition counts, one line per group at fault.

    Every topic of a co-partitioned group must have ``expected`` partitions: the
    tables declare that many for their changelogs and the web router hashes keys
    over that many.
    """
    groups: dict[str, dict[str, int]] = {}
    for spec in specs:
        if spec.copartition_group is not None and spec.name in partitions:
            groups.setdefault(spec.copartition_group, {})[spec.name] = partitions[spec.name]
    problems = []
    for group, counts in sorted(groups.items()):
        wrong = {name: count for name, count in counts.items() if count != expected}
        if wrong:
            listing = ", ".join(f"{name}={count}" for name, count in sorted(wrong.items()))
            problems.append(
                f"topics keyed {group.removeprefix('by_')} must all have {expected} partitions "
                f"(PIPELINE_PARTITIONS) to stay co-partitioned with their table, found {listing}"
            )
    return problems


def admin_client(settings: Settings) -> AdminClient:
    config: dict[str, str | int | float | bool] = dict(settings.kafka_client_config())
    return AdminClient(config)


def existing_partition_counts(admin: AdminClient, timeout: float = 30.0) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topics(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Create the missing topics, then check co-partitioning; return the names created.

    Raises TopicLayoutError naming each group of topics whose partition counts differ.
    """
    admin = admin_client(settings)
    specs = TopicNames.from_settings(settings).specs()
    existing = existing_partition_counts(admin, timeout)
    missing = [spec for spec in specs if spec.name not in existing]
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(
                    spec.name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    config={"cleanup.policy": "compact"} if spec.compacted else {},
                )
                for spec in missing
            ],
            operation_timeout=timeout,
        )
        for future in futures.values():
            try:
                future.result()
            except KafkaException as exc:
                # Another worker starting at the same moment may have won the race.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        existing = existing_partition_counts(admin, timeout)
    problems = copartitioning_problems(specs, existing, settings.partitions)
    if problems:
        raise TopicLayoutError("; ".join(problems))
    return [spec.name for spec in missing]


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


def group_lag(admin: AdminClient, consumer: Consumer, group: str, topics: Iterable[str]) -> int:
    """Messages of ``topics`` that ``group`` has not committed yet."""
    committed = committed_offsets(admin, group)
    behind = 0
    for topic in topics:
        for partition, (_, end) in watermarks(consumer, topic).items():
            behind += end - committed.get((topic, partition), 0)
    return behind
