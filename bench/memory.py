"""Memory (part 8): RSS against the number of RocksDB partition databases one worker holds.

Each measure runs in a fresh process (``python -m bench.memory child``) that opens one table
of N partition databases through Faust's store (``Store._db_for_partition``, the path the
bulk restore and the agents take) and writes a steady stream of rows into them, round
robin in batches (``write_partition``, as the agents do), reading a few back after each.
*before*: Faust's store with the per-database options the pipeline used until issue 31
(a 16 MiB block cache and 2 x 8 MiB memtables each); *after*: ``faust_table``, every
database within the one ``PIPELINE_STATE_MEMORY_MB`` budget (pipeline.engine.rocksdb_memory).
Peak is VmHWM; steady is the median VmRSS over the second half of the writes.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bench.common import Row, peak_rss_bytes, rss_bytes

BEFORE = "before"
AFTER = "after"
COUNTS = (8, 32, 64, 128)
BUDGETS_MB = (64, 256)
# The options every partition database got before issue 31 (the table module's ROCKSDB_OPTIONS).
OLD_OPTIONS: dict[str, Any] = {
    "block_cache_size": 16 * 1024**2,
    "block_cache_compressed_size": 4 * 1024**2,
    "write_buffer_size": 8 * 1024**2,
    "max_write_buffer_number": 2,
}
VALUE_BYTES = 256
# One fixed key set for the whole table, spread over its databases and rewritten: the
# rows held stay the same whatever the number of databases, the writes go on.
KEYS = 100_000
BATCH_ROWS = 200
READS_PER_BATCH = 20


def measure_in_this_process(
    mode: str, dbs: int, per_db_mib: float, budget_mb: int, directory: Path
) -> dict[str, float]:
    import faust

    from pipeline.engine.rocksdb_memory import state_memory
    from pipeline.engine.store import partition_db, partition_reader, write_partition
    from pipeline.engine.tables import faust_table
    from pipeline.settings import Settings
    from pipeline.streaming.metrics import Metrics
    from pipeline.streaming.topology import TableSpec

    pid = os.getpid()
    app = faust.App("bench-memory", datadir=str(directory), store="rocksdb://", autodiscover=False)
    if mode == BEFORE:
        table: Any = app.Table(
            "rows",
            key_type=bytes,
            value_type=bytes,
            partitions=dbs,
            options=dict(OLD_OPTIONS),
        )
    else:
        settings = Settings(data_dir=directory, partitions=dbs, state_memory_mb=budget_mb)
        spec = TableSpec[bytes]("rows", bytes, bytes, "bench memory rows")
        table = faust_table(app, settings, Metrics(), spec)
    store = table.data
    started = rss_bytes(pid)
    for partition in range(dbs):
        partition_db(store, partition)
    opened = rss_bytes(pid)
    read = partition_reader(store)
    rows_per_db = int(per_db_mib * 1024**2 / VALUE_BYTES)
    keys_per_db = max(1, KEYS // dbs)
    rounds = max(1, rows_per_db // BATCH_ROWS)
    samples: list[int] = []
    memtables: list[int] = [0]
    cached: list[int] = [0]
    written = 0
    for round_ in range(rounds):
        first = round_ * BATCH_ROWS
        for partition in range(dbs):
            rows = [
                (f"key-{(first + i) % keys_per_db:06d}".encode(), os.urandom(VALUE_BYTES))
                for i in range(BATCH_ROWS)
            ]
            write_partition(store, partition, rows)
            written += BATCH_ROWS * VALUE_BYTES
            for i in range(READS_PER_BATCH):
                read(partition, f"key-{(first * 7 + i * 131) % keys_per_db:06d}".encode())
        samples.append(rss_bytes(pid))
        if mode == AFTER:
            memory = state_memory(budget_mb)
            memtables.append(memory.write_buffers.get_usage())
            cached.append(memory.cache.get_usage())
    steady = statistics.median(samples[len(samples) // 2 :])
    return {
        "started": started,
        "opened": opened,
        "steady": steady,
        "peak": peak_rss_bytes(pid),
        "written": written,
        "memtables_peak": max(memtables),
        "cache_peak": max(cached),
    }


@dataclass(frozen=True)
class Measure:
    mode: str
    dbs: int
    started: float
    opened: float
    steady: float
    peak: float
    written: float
    memtables_peak: float
    cache_peak: float


def measure(mode: str, dbs: int, per_db_mib: float, budget_mb: int) -> Measure:
    """One measure in a fresh process (its RSS only this table's)."""
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as directory:
        command = [sys.executable, "-m", "bench.memory", "child", mode, str(dbs)]
        command += [str(per_db_mib), str(budget_mb), directory]
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"bench.memory child {mode} {dbs} failed:\n{out.stderr}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
    return Measure(mode, dbs, **figures)


def mib(size: float) -> str:
    return f"{size / 1024**2:,.0f} MiB"


def run(
    counts: tuple[int, ...] = COUNTS,
    per_db_mib: float = 8.0,
    budgets_mb: tuple[int, ...] = BUDGETS_MB,
) -> list[Row]:
    """For each number of databases: before, then after with each budget."""
    rows: list[Row] = []
    for dbs in counts:
        before = measure(BEFORE, dbs, per_db_mib, budgets_mb[0])
        runs = [("old per-db options", before)]
        runs += [
            (f"one {budget} MiB budget", measure(AFTER, dbs, per_db_mib, budget))
            for budget in budgets_mb
        ]
        for what, result in runs:
            print(
                f"memory: {dbs} dbs, {what}: peak {mib(result.peak)}, steady "
                f"{mib(result.steady)}, opened {mib(result.opened)} "
                f"(from {mib(result.started)})",
                flush=True,
            )
            notes = f"{mib(result.written)} written; {mib(result.opened - result.started)} to open"
            if result is not before:
                notes += (
                    f"; memtables / cache at most {mib(result.memtables_peak)} / "
                    f"{mib(result.cache_peak)}"
                )
            rows.append(
                Row(
                    "8 memory",
                    f"{dbs} partition dbs, {what}: peak / steady RSS",
                    f"{mib(result.peak)} / {mib(result.steady)} (n=1)",
                    "" if result is before else f"{result.peak / before.peak:.2f}x before",
                    notes,
                )
            )
    return rows


@click.command("child")
@click.argument("mode", type=click.Choice([BEFORE, AFTER]))
@click.argument("dbs", type=int)
@click.argument("per_db_mib", type=float)
@click.argument("budget_mb", type=int)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def child(mode: str, dbs: int, per_db_mib: float, budget_mb: int, directory: Path) -> None:
    """One measure, printed as JSON (run by ``measure`` in a fresh process)."""
    print(json.dumps(measure_in_this_process(mode, dbs, per_db_mib, budget_mb, directory)))


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"]:
        raise SystemExit("usage: python -m bench.memory child MODE DBS PER_DB_MIB BUDGET_MB DIR")
    child(sys.argv[2:])
