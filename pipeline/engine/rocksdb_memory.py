"""One memory budget for every RocksDB database a worker opens.

Faust opens each table partition's database with a block cache of its own and memtables of
their own, so a worker's memory grows with partitions x tables x (active + standby). Here
every database is opened with one process-wide block cache and one write-buffer manager
whose memtables are charged to that cache (Kafka Streams' ``BoundedMemoryRocksDBConfig``):
the block cache (data, index and filter blocks) plus the memtables of all of them stay
within ``PIPELINE_STATE_MEMORY_MB`` (docs/settings.md says what else a database costs).

``PipelineTable`` builds ``BoundedStore`` for ``rocksdb://`` tables; the store opens each
database through ``database_options``. The bulk restore and the agents reach the databases
through Faust's ``Store._db_for_partition``, so they use the same shared objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
import rocksdict
from faust.stores import rocksdb as faust_rocksdb
from faust.types import StoreT
from yarl import URL

MIB = 1024**2
# The memtables' share of the budget; they are charged to the cache, so the total holds.
MEMTABLE_SHARE = 0.5
# Each memtable allocates its arena in blocks of this size: RocksDB's default (1/8 of the
# write buffer, about 1 MiB here) made every database hold a block of its own before any
# row, past the write-buffer manager's limit (docs/benchmarks.md, memory).
ARENA_BLOCK_BYTES = 256 * 1024
# The largest memtable of one database, before the write-buffer manager flushes earlier.
MAX_WRITE_BUFFER_BYTES = 8 * MIB
MIN_WRITE_BUFFER_BYTES = 1 * MIB
MAX_WRITE_BUFFER_NUMBER = 2
DEFAULT_COLUMN_FAMILY = "default"


@dataclass(frozen=True)
class StateMemory:
    """The objects every database of the process shares, for one budget."""

    budget_bytes: int
    cache: rocksdict.Cache
    write_buffers: rocksdict.WriteBufferManager

    @property
    def memtable_bytes(self) -> int:
        return int(self.budget_bytes * MEMTABLE_SHARE)

    @property
    def write_buffer_bytes(self) -> int:
        """One memtable of one database: an eighth of the memtables' share, within bounds."""
        return max(MIN_WRITE_BUFFER_BYTES, min(MAX_WRITE_BUFFER_BYTES, self.memtable_bytes // 8))


_shared: dict[int, StateMemory] = {}


def state_memory(budget_mb: int) -> StateMemory:
    """The process's shared cache and write-buffer manager for this budget (made once)."""
    if budget_mb < 1:
        raise ValueError(f"a state memory budget of {budget_mb} MiB is below 1 MiB")
    memory = _shared.get(budget_mb)
    if memory is None:
        budget = budget_mb * MIB
        cache = rocksdict.Cache(budget)
        # No stalls: with them on, a writer over the limit waited for the flush of another
        # database that nothing triggered, and the process hung (bench part 8).
        write_buffers = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            int(budget * MEMTABLE_SHARE), False, cache
        )
        memory = _shared[budget_mb] = StateMemory(budget, cache, write_buffers)
    return memory


def database_options(
    memory: StateMemory, faust_options: faust_rocksdb.RocksDBOptions, path: Path
) -> rocksdict.Options:
    """The options of one database: Faust's (``RocksDBOptions.as_options`` and ``open``:
    raw mode, bloom filter, binary-search index, open files, file size, the db path), with
    the shared cache and write-buffer manager instead of a cache and memtables of its own."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    if faust_options.max_open_files is not None:
        options.set_max_open_files(faust_options.max_open_files)
    options.set_target_file_size_base(faust_options.target_file_size_base)
    options.set_write_buffer_size(memory.write_buffer_bytes)
    options.set_max_write_buffer_number(MAX_WRITE_BUFFER_NUMBER)
    options.set_arena_block_size(ARENA_BLOCK_BYTES)
    options.set_write_buffer_manager(memory.write_buffers)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(faust_options.bloom_filter_size, True)
    table.set_block_cache(memory.cache)
    # Index and filter blocks count against the cache too, instead of outside any bound.
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    options.set_block_based_table_factory(table)
    options.set_db_paths([rocksdict.DBPath(str(path), faust_options.target_file_size_base)])
    return options


def open_database(
    memory: StateMemory,
    faust_options: faust_rocksdb.RocksDBOptions,
    path: Path,
    *,
    read_only: bool = False,
) -> rocksdict.Rdict:
    """Open one partition's database as Faust's ``RocksDBOptions.open`` does (its TTL, fresh
    read options), through ``database_options``; ``read_only`` opens it read-only."""
    if read_only:
        access = rocksdict.AccessType.read_only()
    elif faust_options.ttl is None:
        access = rocksdict.AccessType.read_write()
    else:
        access = rocksdict.AccessType.with_ttl(faust_options.ttl)
    options = database_options(memory, faust_options, path)
    # The default column family named with our options: for a database that exists,
    # rocksdict otherwise opens its column families with the options of its OPTIONS file,
    # whose table factory gets a new 8 MiB block cache of its own (not the shared one).
    db = rocksdict.Rdict(
        str(path),
        options=options,
        column_families={DEFAULT_COLUMN_FAMILY: options},
        access_type=access,
    )
    db.set_read_options(rocksdict.ReadOptions())
    return db


class BoundedStore(faust_rocksdb.Store):
    """Faust's RocksDB store, each partition's database opened within the shared budget."""

    def __init__(self, *args: Any, memory: StateMemory, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memory = memory

    def _open_for_partition(self, partition: int) -> rocksdict.Rdict:
        """Faust's: the partition's path, read-only only where Faust would (``read_only``
        set and the path a file), opened through the shared options."""
        path = self.partition_path(partition)
        read_only = bool(self.read_only) if os.path.isfile(path) else False
        return open_database(self.memory, self.rocksdb_options, path, read_only=read_only)


class PipelineTable(faust.Table[Any, Any]):
    """A Faust table whose ``rocksdb://`` store is a ``BoundedStore``; ``memory://`` and any
    other store are Faust's."""

    def __init__(self, *args: Any, state_memory: StateMemory, **kwargs: Any) -> None:
        self.state_memory = state_memory
        super().__init__(*args, **kwargs)

    def _new_store_by_url(self, url: str | URL) -> StoreT[Any, Any]:
        if not str(url).startswith("rocksdb:"):
            return super()._new_store_by_url(url)
        return BoundedStore(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
            memory=self.state_memory,
        )
