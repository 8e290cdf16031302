"""Creating the pipeline's topics.

The broker does not create topics on demand, so a worker creates whatever is
missing before it starts consuming, and refuses to start when an existing topic's
partition count would break co-partitioning (pipeline.topics says which must match).
"""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from pipeline.kafka.clients import logging_to_python
from pipeline.kafka.naming import TopicSpec, copartitioning_problems
from pipeline.settings import Settings


class TopicLayoutError(RuntimeError):
    """An existing topic's partition count breaks co-partitioning; the message says which."""


def admin_client(settings: Settings) -> AdminClient:
    return AdminClient(logging_to_python(settings.kafka_client_config()))


def existing_partition_counts(admin: AdminClient, timeout: float = 30.0) -> dict[str, int]:
    metadata = admin.list_topics(timeout=timeout)
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def ensure_topics(
    settings: Settings, specs: Sequence[TopicSpec], timeout: float = 30.0
) -> list[str]:
    """Create the missing topics of ``specs``, then check co-partitioning; return the
    names created.

    Raises TopicLayoutError naming each group of topics whose partition counts differ.
    """
    admin = admin_client(settings)
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
