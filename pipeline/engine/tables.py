"""Faust tables for the tables a topology declares.

Keys and values are raw bytes on purpose (``bytes`` types select Faust's raw serializer):
- keys are the UTF-8 bytes the source topics carry, so the changelog partition and
  the web router hash exactly the bytes the producer hashed (Faust's default json
  key serializer would hash ``b'"u1"'`` instead of ``b'u1'``);
- values are the rows as the table declares them, framed with the positions they
  applied (pipeline.streaming.positions), encoded once per write instead of json on
  every get and set.
"""

from __future__ import annotations

from typing import Any, cast

import faust
from faust.types import EventT, TableT

from pipeline.engine.rocksdb_memory import PipelineTable, state_memory
from pipeline.settings import Settings
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.topology import TableSpec


def faust_table(
    app: faust.App, settings: Settings, metrics: Metrics, spec: TableSpec[Any]
) -> TableT[bytes, bytes]:
    recovered = metrics.changelog_events_recovered.labels(spec.name)

    async def count_recovered(event: EventT[bytes]) -> None:
        # Shows how much of the changelog a (re)started worker had to read.
        recovered.inc()

    # What app.Table does, with our table class: its RocksDB databases share one memory
    # budget (pipeline.engine.rocksdb_memory).
    table = PipelineTable(
        app,
        name=spec.name,
        default=None,
        beacon=app.tables.beacon,
        state_memory=state_memory(settings.state_memory_mb),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help=spec.help,
        on_changelog_event=count_recovered,
        # A standby applies each changelog record as it arrives: Faust's default buffers
        # 1,000 per partition and applies them only when the buffer is full, so a standby
        # (and a view answering from it) could stay behind for good on a quiet table.
        # The bulk restore at start-up does the large catch-ups.
        standby_buffer_size=1,
    )
    return cast(TableT[bytes, bytes], app.tables.add(table))
