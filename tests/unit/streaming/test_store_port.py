"""The partition-store port's range scans and deletes: in memory, and through a batch's
rows (``RowBatch``), whose scans read through the rows not stored yet and whose deletes
are changelog tombstones."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.ports import Event
from pipeline.streaming.processing import DELETED, Prepared, RowBatch, RowCache
from pipeline.streaming.producer import Delivered, ProducerRecord


@dataclass
class Message:
    partition: int
    topic: str = "t"
    offset: int = 0
    timestamp: float = 0.0
    key: bytes | None = None
    value: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Delivery:
    message: Message


def event(partition: int) -> Event:
    return cast(Event, Delivery(Message(partition)))


def test_memory_scans_are_ordered_bounded_and_per_partition() -> None:
    store = MemoryPartitionStore("t-changelog")
    store.write(0, [(b"b", b"2"), (b"a", b"1"), (b"c", b"3"), (b"d", b"4")])
    store.write(1, [(b"b", b"other partition")])
    assert list(store.scan(0, b"b", b"d")) == [(b"b", b"2"), (b"c", b"3")]
    store.write(0, [(b"c", None), (b"e", b"5")])  # a None value deletes
    assert list(store.scan(0, b"", b"\xff")) == [
        (b"a", b"1"),
        (b"b", b"2"),
        (b"d", b"4"),
        (b"e", b"5"),
    ]
    assert store.read(0, b"c") is None


class Sent:
    def __init__(self) -> None:
        self.records: list[ProducerRecord] = []

    async def __call__(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        self.records += messages
        done: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        done.set_result({(record.topic, cast(int, record.partition)): 9 for record in messages})
        return done


def rows(
    store: MemoryPartitionStore,
    sent: Sent,
    previous: Prepared | None = None,
    unsettled: dict[bytes, Any] | None = None,
    cache: RowCache[bytes] | None = None,
) -> RowBatch[bytes]:
    return RowBatch(store, bytes, bytes, sent, previous, unsettled, cache)


def test_a_delete_is_a_tombstone_then_a_delete_in_the_store_and_the_cache() -> None:
    async def scenario() -> None:
        store = MemoryPartitionStore("t-changelog")
        store.write(3, [(b"a", b"1"), (b"b", b"2")])
        cache: RowCache[bytes] = RowCache(10)
        cache.put([(b"a", b"1")])
        sent = Sent()
        batch = rows(store, sent, cache=cache)
        batch.delete(b"a", event(3))
        batch.put(b"c", b"3", event(3))
        assert batch.get(b"a", event(3)) is None
        prepared = await batch.send([])
        await prepared.complete()
        assert [(r.key, r.value, r.partition) for r in sent.records] == [
            (b"a", None, 3),
            (b"c", b"3", 3),
        ]
        assert list(store.scan(3, b"", b"\xff")) == [(b"b", b"2"), (b"c", b"3")]
        assert cache.get(b"a") is None and store.changelog_offsets == {3: 9}

    asyncio.run(scenario())


def test_a_scan_reads_through_the_rows_not_stored_yet() -> None:
    async def scenario() -> None:
        store = MemoryPartitionStore("t-changelog")
        store.write(0, [(b"k1", b"stored"), (b"k2", b"stored"), (b"k3", b"stored")])
        store.write(0, [(b"k4", b"stored"), (b"z", b"out of range")])
        sent = Sent()
        in_flight = rows(store, sent)
        in_flight.put(b"k2", b"in flight", event(0))
        in_flight.delete(b"k3", event(0))
        previous = await in_flight.send([])
        # Exactly-once: rows of settled batches whose transaction has not committed.
        unsettled = {b"k1": DELETED, b"k5": b"unsettled"}
        batch = rows(store, sent, previous, unsettled)
        batch.put(b"k0", b"this batch", event(0))
        assert batch.scan(0, b"k", b"l") == [
            (b"k0", b"this batch"),
            (b"k2", b"in flight"),
            (b"k4", b"stored"),
            (b"k5", b"unsettled"),
        ]
        assert batch.get(b"k1", event(0)) is None and batch.get(b"k3", event(0)) is None

    asyncio.run(scenario())
