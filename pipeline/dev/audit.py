"""Whether every derived event is in its topic exactly once, as a ``read_committed``
consumer sees it: records, duplicates and missing ones per derived topic (and the re-keyed
order lines), against what the fed events imply (pipeline.dev.expected), not against the
pipeline's own rules.

A topic is read from its start to its current end, partition by partition, with
``read_committed``: nothing of an aborted or still open transaction is seen, as a
downstream reader would see it. Record counts from offsets (pipeline.kafka.offsets) are no
substitute under exactly_once: commit markers and aborted records take offsets too. Used by
``pipeline demo`` and the integration tests.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaError, TopicPartition

from pipeline.dev import expected
from pipeline.dev.loadgen import ShopEvent
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.topics import TopicNames

K = TypeVar("K")


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def _bytes(data: str | bytes | None) -> bytes | None:
    return data.encode() if isinstance(data, str) else data


def read_topic(settings: Settings, topic: str, timeout: float = 30.0) -> list[Record]:
    """Every committed record of ``topic`` from the start up to its current end, by
    partition (``read_committed``: nothing of an aborted or open transaction). The end is
    where the consumer says it is: the last offset of a partition may be a transaction's
    commit marker, which is never delivered. TimeoutError when a partition says nothing for
    ``timeout`` seconds (an open transaction holds a ``read_committed`` reader back)."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"pipeline-audit-{os.getpid()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    records: list[Record] = []
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        for partition in sorted(partitions):
            where = TopicPartition(topic, partition)
            low, high = consumer.get_watermark_offsets(where, timeout=timeout)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            while True:
                message = consumer.poll(timeout)
                if message is None:
                    raise TimeoutError(f"{topic}[{partition}]: nothing at {offset} in {timeout} s")
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    break
                if error is not None:
                    raise RuntimeError(f"{topic}[{partition}] at {offset}: {error}")
                offset = (message.offset() or 0) + 1
                found = message.headers() or []
                pairs = list(found.items()) if isinstance(found, dict) else list(found)
                headers = [(name, _bytes(value) or b"") for name, value in pairs]
                records.append(
                    Record(
                        partition,
                        offset - 1,
                        _bytes(message.key()),
                        _bytes(message.value()),
                        headers,
                    )
                )
    finally:
        consumer.close()
    return records


def decoded(codecs: Codecs, topic: str, records: Iterable[Record]) -> list[dict[str, Any]]:
    """Records in partition order, decoded synchronously (our own schema ids are cached)."""
    codec = codecs[topic]
    return [codec.decode(record.value or b"") for record in records]


@dataclass(frozen=True)
class Tally:
    """What a derived topic holds against what the input implies, each record once."""

    records: int
    duplicates: int
    missing: int

    def __str__(self) -> str:
        return f"{self.records} records, {self.duplicates} duplicates, {self.missing} missing"


def excess(have: Counter[K], want: Counter[K]) -> tuple[int, int]:
    """(more than wanted, fewer than wanted), summed over every value."""
    return sum((have - want).values()), sum((want - have).values())


def level_steps(levels: Mapping[str, Sequence[int]]) -> Counter[tuple[str, int]]:
    """(sku, change) between each SKU's successive levels (in partition order, from 0): its
    stock changes, once each when every level record is there once. A repeated record adds
    a change of 0, a missing one merges two changes into their sum."""
    steps: Counter[tuple[str, int]] = Counter()
    for sku, values in levels.items():
        for before, after in zip([0, *values], values, strict=False):
            steps[(sku, after - before)] += 1
    return steps


def final_levels(read_levels: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[int, Any]]]:
    """sku → (available, updated_at) of its final history: for each event that changed
    the SKU (told apart by its time, unique per SKU in the generated input), the last level
    record emitted for it, in the order of those records.

    Under at-least-once, a batch whose derived events were partly delivered before its
    worker died is processed again: its levels are repeated, possibly in another order (the
    stock side reads two topics), and an alert among them may have been delivered only the
    second time. The levels as read then cross the threshold where the final history, the
    one the table holds, does not; each repeat supersedes what came before it.
    """
    last: dict[tuple[str, Any], tuple[int, int]] = {}
    for position, level in enumerate(read_levels):
        last[(level["sku"], level["updated_at"])] = (position, level["available"])
    history: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for (sku, at), (_, available) in sorted(last.items(), key=lambda item: item[1][0]):
        history[sku].append((available, at))
    return history


def failures(tallies: Mapping[str, Tally], guarantee: str) -> list[str]:
    """The topics that break ``guarantee``: any with records missing, and under
    exactly_once any with one twice (at-least-once may repeat, never lose)."""
    return [
        topic
        for topic, tally in tallies.items()
        if tally.missing or (guarantee == "exactly_once" and tally.duplicates)
    ]


def derived_tallies(settings: Settings, events: list[ShopEvent]) -> dict[str, Tally]:
    """By derived topic (and the re-keyed order lines): what it holds against once each,
    read ``read_committed``. Meaningful only for topics that held nothing before
    ``events`` were fed."""
    names = TopicNames.from_settings(settings)
    codecs = Codecs.from_settings(settings)
    codecs.prepare()

    def read(topic: str) -> list[dict[str, Any]]:
        return decoded(codecs, topic, read_topic(settings, topic))

    tallies: dict[str, Tally] = {}

    # One record per order, its count the user's running order count: 1..n once each.
    stats = read(names.user_order_stats)
    have_counts = Counter((s["user_id"], s["order_count"]) for s in stats)
    tallies[names.user_order_stats] = Tally(
        len(stats), *excess(have_counts, expected.order_counts(events))
    )

    # One record per stock change: the steps between a SKU's levels are its changes.
    read_levels = read(names.stock_levels)
    levels: dict[str, list[int]] = defaultdict(list)
    for level in read_levels:
        levels[level["sku"]].append(level["available"])
    tallies[names.stock_levels] = Tally(
        len(read_levels), *excess(level_steps(levels), expected.stock_deltas(events))
    )

    # One alert per downward crossing of the threshold in the levels of each SKU's final
    # history (``final_levels``), each for the event whose level crossed it.
    alerts = read(names.low_stock_alerts)
    have_alerts = Counter((alert["sku"], alert["available"], alert["at"]) for alert in alerts)
    want_alerts: Counter[tuple[str, int, Any]] = Counter()
    for sku, history in final_levels(read_levels).items():
        values = [available for available, _ in history]
        for index in expected.crossed_at(values, settings.low_stock_threshold):
            want_alerts[(sku, *history[index])] += 1
    tallies[names.low_stock_alerts] = Tally(len(alerts), *excess(have_alerts, want_alerts))

    # A welcome per registration, a confirmation per order at its user's address.
    notes = read(names.notifications)
    have_notes = Counter(
        (note["user_id"], note["template"], note.get("order_id"), note["address"]) for note in notes
    )
    tallies[names.notifications] = Tally(
        len(notes), *excess(have_notes, expected.notifications(events))
    )

    # One re-keyed record per order line (each carries its origin, so repeats are equal).
    lines = read_topic(settings, names.order_lines_by_sku)
    unique = len({(line.key, line.value) for line in lines})
    wanted = expected.order_lines(events)
    tallies[names.order_lines_by_sku] = Tally(
        len(lines), len(lines) - unique, max(0, wanted - unique)
    )
    return tallies
