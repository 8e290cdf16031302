"""Bulk restore of the RocksDB tables from their changelogs, at each assignment.

Faust's recovery reads a changelog one event at a time through its stream machinery
(about 6,000 records/s on this project's benchmark machine). When the group assigns
the worker its partitions, before Faust's recovery starts, this reads each assigned
changelog partition (active or standby) from where the local database left off (its
persisted offset, or the start) to the end, with a plain confluent-kafka consumer in
large batches, and writes the rows in one RocksDB write batch per partition into the
databases Faust opens, with the persisted offsets Faust's recovery would have
written. Faust's recovery then starts from there and reads only what was written
since.

Only committed records are read (``read_committed``): under exactly-once a changelog
record of a transaction that was aborted never reaches a table. A transaction's
commit marker takes an offset of its own, at the partition's end: a partition read
to its end is recorded as applied up to the offset before the end, not only up to
its last record, or Faust's recovery would wait for a record at the marker's offset.

Only the assigned partitions are restored, so a worker's disk, memory and start time
grow with its share of the state, not with all of it (pipeline.engine.copies
removes the copies of partitions it no longer holds, after a delay).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, cast

from confluent_kafka import Consumer, KafkaError, TopicPartition
from faust.types import TP
from rocksdict import WriteBatch

from pipeline.engine.store import partition_db
from pipeline.kafka.offsets import watermarks
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Records handed to the store per write: one RocksDB write batch per partition.
BATCH = 10_000


class ChangelogStore(Protocol):
    """What this module uses of Faust's RocksDB store (``faust.stores.rocksdb.Store``)."""

    def persisted_offset(self, tp: TP) -> int | None: ...

    def set_persisted_offset(self, tp: TP, offset: int) -> None: ...


@dataclass(frozen=True)
class RestoreReport:
    records: dict[str, int]  # by changelog topic
    partitions: int
    seconds: float

    @property
    def total(self) -> int:
        return sum(self.records.values())

    @property
    def per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


def restore(
    settings: Settings,
    stores: dict[str, ChangelogStore],
    partitions: Collection[tuple[str, int]] | None = None,
) -> RestoreReport:
    """Bring each store (by changelog topic) up to its changelog's current end: the
    ``partitions`` (changelog topic, partition) given, or every one."""
    started = time.monotonic()
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"{settings.app_id}-restore",  # never joins or commits: assign() only
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 16 * 1024**2,
            "max.partition.fetch.bytes": 4 * 1024**2,
            # Bounds what librdkafka prefetches: the worker's peak memory.
            "queued.max.messages.kbytes": 32 * 1024,
        }
    )
    records = dict.fromkeys(stores, 0)
    try:
        assignment = _plan(consumer, stores, partitions)
        pending = {(tp.topic, tp.partition) for tp in assignment}
        if assignment:
            consumer.assign(assignment)
        while pending:
            writes: dict[tuple[str, int], WriteBatch] = {}
            last: dict[tuple[str, int], int] = {}
            ends: dict[tuple[str, int], int] = {}
            for message in consumer.consume(BATCH, timeout=1.0):
                # Set on every consumed message; typed Optional for produced ones.
                place = (cast(str, message.topic()), cast(int, message.partition()))
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(place)
                        ends[place] = cast(int, message.offset())  # the next offset
                        continue
                    raise RuntimeError(f"restoring {place[0]}[{place[1]}]: {error}")
                batch = writes.get(place)
                if batch is None:
                    batch = writes[place] = WriteBatch(raw_mode=True)
                key, value = message.key(), message.value()
                if key is None:  # not a row (Faust never writes one): only the offset counts
                    pass
                elif value is None:  # a tombstone: the row was deleted
                    batch.delete(key)
                else:
                    batch.put(key, value)
                last[place] = cast(int, message.offset())
            for (topic, partition), batch in writes.items():
                records[topic] += len(batch)  # before the write, which consumes the batch
                store = stores[topic]
                # The database Faust itself opens (same path and options): a RocksDB write
                # batch there is several times faster than the public
                # apply_changelog_batch's per-event loop.
                partition_db(store, partition).write(batch)
                store.set_persisted_offset(TP(topic, partition), last[topic, partition])
            for (topic, partition), end in ends.items():
                # Past a trailing transaction marker (at-least-once: the last record).
                stores[topic].set_persisted_offset(TP(topic, partition), end - 1)
        report = RestoreReport(records, len(assignment), time.monotonic() - started)
    finally:
        consumer.close()
    if report.total:
        log.info(
            "restored %d changelog records (%d partitions) in %.1f s, %.0f records/s",
            report.total,
            report.partitions,
            report.seconds,
            report.per_second,
        )
    return report


def _plan(
    consumer: Consumer,
    stores: dict[str, ChangelogStore],
    partitions: Collection[tuple[str, int]] | None,
) -> list[TopicPartition]:
    """The changelog partitions (of ``partitions``, if given) with records past the local
    database's offset, each from its first record still to apply."""
    assignment = []
    for topic, store in stores.items():
        for partition, (low, high) in sorted(watermarks(consumer, topic).items()):
            if partitions is not None and (topic, partition) not in partitions:
                continue
            applied = store.persisted_offset(TP(topic, partition))
            start = low if applied is None else max(applied + 1, low)
            if start < high:
                assignment.append(TopicPartition(topic, partition, start))
    return assignment
