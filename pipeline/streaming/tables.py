"""The two tables: user order stats (keyed by user_id) and stock (keyed by SKU).

Keys and values are raw bytes on purpose (``bytes`` types select Faust's raw serializer):
- keys are the UTF-8 bytes the source topics carry, so the changelog partition and
  the web router hash exactly the bytes the producer hashed (Faust's default json
  key serializer would hash ``b'"u1"'`` instead of ``b'u1'``);
- values are the compact rows of ``pipeline.domain.encoding``, encoded once per write
  instead of json on every get and set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT, TableT

from pipeline.settings import Settings
from pipeline.streaming.metrics import Metrics
from pipeline.topics import STOCK_TABLE, USER_STATS_TABLE

# RocksDB's default block cache is 2 GiB for each partition's database; with
# 8 partitions and 2 tables per worker that is far beyond what the rows need.
ROCKSDB_OPTIONS: dict[str, Any] = {
    "block_cache_size": 16 * 1024**2,
    "block_cache_compressed_size": 4 * 1024**2,
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
}


@dataclass(frozen=True)
class Tables:
    user_stats: TableT[bytes, bytes]
    stock: TableT[bytes, bytes]


def _table(
    app: faust.App, settings: Settings, metrics: Metrics, name: str, help: str
) -> TableT[bytes, bytes]:
    rocksdb = settings.store.startswith("rocksdb://")
    recovered = metrics.changelog_events_recovered.labels(name)

    async def count_recovered(event: EventT[bytes]) -> None:
        # Shows how much of the changelog a (re)started worker had to read.
        recovered.inc()

    return app.Table(
        name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help=help,
        # A fresh dict per table: Faust's RocksDB store pops keys from it.
        options=dict(ROCKSDB_OPTIONS) if rocksdb else None,
        on_changelog_event=count_recovered,
    )


def define_tables(app: faust.App, settings: Settings, metrics: Metrics) -> Tables:
    return Tables(
        user_stats=_table(
            app,
            settings,
            metrics,
            USER_STATS_TABLE,
            "Order count, total spent and last order per user.",
        ),
        stock=_table(app, settings, metrics, STOCK_TABLE, "Units available per SKU."),
    )
