from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import faust
import pytest
import rocksdict
from faust.stores.memory import Store as MemoryStore

from pipeline.engine.rocksdb_memory import (
    MAX_WRITE_BUFFER_BYTES,
    MIB,
    MIN_WRITE_BUFFER_BYTES,
    BoundedStore,
    PipelineTable,
    StateMemory,
    state_memory,
)
from pipeline.engine.store import partition_db, write_partition
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.worker import create_app

# Each test uses a budget of its own, so the shared objects it looks at start empty.


def shop_app(tmp_path: Path, budget_mb: int, partitions: int = 4) -> faust.App:
    settings = Settings(
        app_id="unit",
        topic_prefix="unit.",
        data_dir=tmp_path,
        partitions=partitions,
        state_memory_mb=budget_mb,
    )
    return create_app(shop(settings))


def every_db(app: faust.App, partitions: int) -> list[rocksdict.Rdict]:
    tables = cast(Any, app).pipeline_tables.values()
    return [partition_db(table.data, p) for table in tables for p in range(partitions)]


def test_one_cache_and_write_buffer_manager_per_budget() -> None:
    memory = state_memory(3)
    assert state_memory(3) is memory
    assert state_memory(5) is not memory
    assert memory.budget_bytes == 3 * MIB
    with pytest.raises(ValueError, match="0 MiB"):
        state_memory(0)


@pytest.mark.parametrize(
    ("budget_mb", "write_buffer"),
    [(1, MIN_WRITE_BUFFER_BYTES), (32, 2 * MIB), (256, MAX_WRITE_BUFFER_BYTES), (4096, 8 * MIB)],
)
def test_a_memtable_is_sized_from_the_budget(budget_mb: int, write_buffer: int) -> None:
    memory = StateMemory(budget_mb * MIB, rocksdict.Cache(MIB), cast(Any, None))
    assert memory.memtable_bytes == budget_mb * MIB // 2
    assert memory.write_buffer_bytes == write_buffer


def test_every_table_builds_the_bounded_store_on_the_settings_budget(tmp_path: Path) -> None:
    app = shop_app(tmp_path, 11)
    tables = list(cast(Any, app).pipeline_tables.values())
    assert len(tables) >= 2
    for table in tables:
        assert isinstance(table, PipelineTable)
        assert isinstance(table.data, BoundedStore)
        assert table.data.memory is state_memory(11)
        # What faust_table asked of Faust is kept.
        assert table.standby_buffer_size == 1
        assert table._on_changelog_event is not None
        assert table.help
        assert app.tables[table.name] is table


def test_a_memory_store_stays_fausts(tmp_path: Path) -> None:
    settings = Settings(app_id="unit", topic_prefix="unit.", data_dir=tmp_path, store="memory://")
    app = create_app(shop(settings))
    for table in cast(Any, app).pipeline_tables.values():
        assert type(table.data) is MemoryStore


def test_every_database_reads_its_blocks_into_the_shared_cache(tmp_path: Path) -> None:
    memory = state_memory(61)
    app = shop_app(tmp_path, 61)
    stores = [table.data for table in cast(Any, app).pipeline_tables.values()]
    for store in stores:
        for partition in range(4):
            db = partition_db(store, partition)
            for i in range(4_000):
                db[f"k{i}".encode()] = os.urandom(500)
            db.flush(True)
    # Closed, so every memtable is freed and its reservation in the cache released now (the
    # memtable a flush wrote may be freed after flush() returns, during a later read); then
    # reopened through the store, as after a rebalance or a restart, with nothing written,
    # so the cache's usage moves only with the blocks read.
    for store in stores:
        for partition in range(4):
            store._dbs.pop(partition).close()
    dbs = every_db(app, 4)
    assert len({id(db) for db in dbs}) == len(dbs) >= 8
    for index, db in enumerate(dbs):
        before = memory.cache.get_usage()
        assert sum(len(value) for value in db.values()) == 2_000_000
        # Its data blocks (about 2 MB) are now held by the one cache of the budget.
        assert memory.cache.get_usage() - before > 1_000_000, f"database {index}"


def test_the_memtables_of_every_database_stay_within_the_budget(tmp_path: Path) -> None:
    memory = state_memory(8)
    app = shop_app(tmp_path, 8, partitions=8)
    dbs = every_db(app, 8)
    written = 0
    most_memtables = most_cached = 0
    for round_ in range(4):
        for db in dbs:
            for i in range(2_000):
                db[f"k{i}-{round_}".encode()] = os.urandom(500)
                written += 500
            most_memtables = max(most_memtables, memory.write_buffers.get_usage())
            most_cached = max(most_cached, memory.cache.get_usage())
    assert written > 7 * memory.budget_bytes
    # Memtables, charged to the cache, count in it: every database's writes went through
    # the one write-buffer manager. It flushes without stalling writers, so a flush that
    # lags lets them pass their half of the budget (docs/settings.md); without the manager
    # these 16 databases could hold 2 x 1 MiB of memtables each, 4x the budget.
    assert 0 < most_memtables <= memory.budget_bytes * 1.5
    assert most_memtables <= most_cached <= memory.budget_bytes * 2
    # Every row is still there, flushed or not.
    assert all(db[b"k1999-3"] and db[b"k0-0"] for db in dbs)


def test_a_database_reopens_with_its_rows(tmp_path: Path) -> None:
    app = shop_app(tmp_path, 17)
    store = next(iter(cast(Any, app).pipeline_tables.values())).data
    write_partition(store, 1, [(b"u1", b"row 1")])
    path = store.partition_path(1)
    assert Path(path).is_dir()
    store._dbs.pop(1).close()
    assert partition_db(store, 1)[b"u1"] == b"row 1"
