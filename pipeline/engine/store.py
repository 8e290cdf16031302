"""The partitions of a table's Faust store, reached directly: one RocksDB database per
partition (``Store._db_for_partition``), read, scanned in key order, written in batches
(deletes included), its changelog offset asked, and a copy no longer held removed. An
in-memory store (``memory://``) is one dict for every partition.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from faust.types import TP, StoreT, TableT
from rocksdict import Rdict, ReadOptions, WriteBatch


def partition_db(store: Any, partition: int) -> Rdict:
    """The RocksDB database of one partition of a table's store (opened if need be)."""
    return cast(Rdict, store._db_for_partition(partition))


def write_partition(store: Any, partition: int, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
    """Store ``rows`` (key, value; None deletes the key) in one partition of a table's
    store: one RocksDB write batch, where the table's own writes cost a put each through
    its codecs."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        for key, value in rows:
            if value is None:
                store.pop(key, None)
            else:
                store[key] = value
        return
    batch = WriteBatch(raw_mode=True)
    for key, value in rows:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    partition_db(store, partition).write(batch)


def scan_partition(
    store: Any, partition: int, start: bytes, end: bytes
) -> Iterator[tuple[bytes, bytes]]:
    """The rows of one partition of a table's store with keys in ``[start, end)``, in key
    order: a RocksDB iterator bounded above, or (``memory://``) the one dict's matching
    keys, sorted."""
    if not hasattr(store, "_db_for_partition"):
        found = sorted((key, value) for key, value in store.items() if start <= key < end)
        yield from found
        return
    bounded = ReadOptions()
    bounded.set_iterate_upper_bound(end)
    rows = partition_db(store, partition).iter(bounded)
    rows.seek(start)
    while rows.valid():
        yield cast(bytes, rows.key()), cast(bytes, rows.value())
        rows.next()


def partition_reader(store: Any) -> Callable[[int, bytes], bytes | None]:
    """Reads a key in one partition this worker owns of a table's store, straight from
    its RocksDB database (the table's own read takes the partition from Faust's current
    event, through its codecs and sensors)."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        return lambda partition, key: cast(bytes | None, store.get(key))
    db_for_partition = store._db_for_partition
    return lambda partition, key: cast(bytes | None, db_for_partition(partition).get(key))


def read_partition(store: Any, partition: int, key: bytes) -> bytes | None:
    """``key``'s value in one partition of a table's store, whether this worker holds the
    partition as active, as standby or only as a copy it has not removed yet."""
    if not hasattr(store, "_db_for_partition"):  # memory://: one dict for every partition
        return cast(bytes | None, store.get(key))
    if not has_partition(store, partition):
        return None
    return cast(bytes | None, partition_db(store, partition).get(key))


def copy_offset(store: Any, tp: TP) -> int | None:
    """The offset of the last changelog record this worker's copy of the partition holds;
    None when it holds no copy (none is opened to ask) or the copy holds no record."""
    if not has_partition(store, tp.partition):
        return None
    return cast(int | None, store.persisted_offset(tp))


def has_partition(store: Any, partition: int) -> bool:
    """Whether this worker holds a copy of the partition (open, or on disk)."""
    if not hasattr(store, "_dbs"):  # memory://
        return True
    return partition in store._dbs or Path(store.partition_path(partition)).exists()


def drop_partition(store: Any, partition: int) -> int:
    """Close the partition's database and delete its files; the bytes freed. A partition
    assigned again later is rebuilt from its changelog."""
    path = Path(store.partition_path(partition))
    db = store._dbs.pop(partition, None)
    if db is not None:
        db.close()
    freed = sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    shutil.rmtree(path, ignore_errors=True)
    return freed


class FaustPartitionStore:
    """A Faust table's store as the runtime's ``PartitionStore`` (pipeline.streaming.ports):
    the partitions this worker owns, read and written straight, not through the table
    (which would send each changelog record again through Faust's producer)."""

    def __init__(self, table: TableT[bytes, bytes]) -> None:
        self.table = table
        self.changelog_topic = table.changelog_topic.get_topic_name()
        self._read: Callable[[int, bytes], bytes | None] | None = None

    def read(self, partition: int, key: bytes) -> bytes | None:
        if self._read is None:  # Faust makes the table's store on its first use
            self._read = partition_reader(self.table.data)
        return self._read(partition, key)

    def write(self, partition: int, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        write_partition(self.table.data, partition, rows)

    def scan(self, partition: int, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_partition(self.table.data, partition, start, end)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        cast(StoreT[bytes, bytes], self.table.data).set_persisted_offset(
            TP(self.changelog_topic, partition), offset
        )
