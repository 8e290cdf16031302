"""Recovery and memory (parts 4 and 5): a worker whose tables hold many keys.

Building a million rows by processing a million orders would take most of an hour at
today's throughput, so the rows are written straight to the two changelog topics, in
the layout the tables write (raw UTF-8 keys, ``pipeline.domain.encoding`` rows, the key's
murmur2 partition): exactly what a worker finds when it recovers. ``keys`` user-stats
rows plus ``keys // 10`` stock rows.

(b) start with an empty data dir: seconds until GET /health is ok, and until the views
    answer for the last key written to each partition (the table is then complete), and
    changelog records/s over the latter;
(a) restart after a graceful stop, data dir kept: the same seconds.
Faust starts the web server before it recovers the tables, so /health answers ok long
before the views do: "ready" below means the views answer.
The baseline is a worker started on an empty deployment in the same run. Memory is the
worker's peak RSS (VmHWM) after each start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Row,
    bulk_producer,
    cores,
    make_deployment,
    peak_rss_bytes,
    prepare,
    produce_all,
    run_id,
)
from pipeline.agents.orders import USER_STATS
from pipeline.agents.stock import STOCK
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.domain.rules import StockRow, UserOrderStats
from pipeline.engine.web import partition_for
from pipeline.streaming.positions import Position, Tracked, TrackedCodec, source_id

STOCK_RATIO = 10  # one SKU row per this many user rows
USER_STATS_ROWS = TrackedCodec(USER_STATS.encode, USER_STATS.decode)
STOCK_ROWS = TrackedCodec(STOCK.encode, STOCK.decode)


def user_key(index: int) -> str:
    return f"user-{index:08d}"


def sku_key(index: int) -> str:
    return f"SKU-{index:07d}"


def user_rows(count: int) -> Iterable[tuple[bytes, bytes]]:
    for index in range(count):
        key = user_key(index)
        stats = UserOrderStats(
            order_count=1 + index % 7,
            total_spent_cents=1_000 + index,
            last_order_id=f"{key}-o{1 + index % 7:05d}",
        )
        applied = {source_id("order_created", index % 8): Position(index)}
        yield key.encode(), USER_STATS_ROWS.encode(Tracked(stats, applied))


def stock_rows(count: int) -> Iterable[tuple[bytes, bytes]]:
    for index in range(count):
        row = StockRow(available=100 - index % 200)
        applied = {source_id("order_created", 0): Position(0)}
        yield sku_key(index).encode(), STOCK_ROWS.encode(Tracked(row, applied))


def write_changelogs(deployment: Deployment, keys: int) -> int:
    """The rows, produced to the deployment's changelog topics; how many records."""
    names = deployment.names
    producer = bulk_producer(deployment.settings)
    written = produce_all(producer, names.changelog(USER_STATS.name), user_rows(keys))
    written += produce_all(producer, names.changelog(STOCK.name), stock_rows(keys // STOCK_RATIO))
    return written


@dataclass(frozen=True)
class Start:
    health_s: float
    view_s: float
    peak_rss: int


def last_key_per_partition(keys: int, partitions: int) -> list[str]:
    """The last user key written to each changelog partition (murmur2, as produced)."""
    found: dict[int, str] = {}
    index = keys - 1
    while index >= 0 and len(found) < min(partitions, keys):
        key = user_key(index)
        found.setdefault(partition_for(key.encode(), partitions), key)
        index -= 1
    return list(found.values())


def timed_start(worker: WorkerProcess, probe_paths: list[str]) -> Start:
    """Start, wait for /health, then until every probe answers 200; stays running."""
    worker.start()
    worker.wait_healthy(timeout=1800)
    health_s = time.monotonic() - worker.started_at
    pending = list(probe_paths)

    def all_answer() -> bool:
        pending[:] = [path for path in pending if worker.get(path)[0] != 200]
        return not pending

    wait_for("the views to answer", all_answer, timeout=1800, interval=0.1)
    view_s = time.monotonic() - worker.started_at
    return Start(health_s, view_s, peak_rss_bytes(worker.pid))


def mib(size: int) -> str:
    return f"{size / 1024**2:,.0f} MiB"


def run(root: Path, keys: int) -> list[Row]:
    tag = run_id()
    empty = make_deployment(f"bench-{tag}-empty", root / "recovery-empty")
    prepare(empty)
    baseline_worker = empty.worker("w0")
    try:
        baseline = timed_start(baseline_worker, [])
    finally:
        baseline_worker.stop()

    full = make_deployment(f"bench-{tag}-keys", root / "recovery-keys")
    prepare(full)
    print(f"recovery: writing {keys:,} + {keys // STOCK_RATIO:,} rows to the changelogs ...")
    started = time.monotonic()
    records = write_changelogs(full, keys)
    print(f"  {records:,} records in {time.monotonic() - started:.1f} s", flush=True)
    partitions = full.settings.partitions
    probe = [f"/users/{key}/orders" for key in last_key_per_partition(keys, partitions)]
    worker = full.worker("w0")
    try:
        cold = timed_start(worker, probe)
    finally:
        worker.stop(timeout=300)
    print(f"  empty data dir: ready after {cold.view_s:.1f} s", flush=True)
    try:
        warm = timed_start(worker, probe)
    finally:
        worker.stop(timeout=300)
    print(f"  data dir kept: ready after {warm.view_s:.1f} s", flush=True)

    held = f"{keys:,} user + {keys // STOCK_RATIO:,} stock rows"
    base = f"{baseline.view_s:.1f} s"
    return [
        Row(
            "4 recovery",
            "(a) restart, data dir kept: s to /health ok / to views ready",
            f"{warm.health_s:.1f} / {warm.view_s:.1f} s (n=1)",
            f"{warm.view_s / baseline.view_s:.2f}x empty worker ({base})",
            held,
        ),
        Row(
            "4 recovery",
            "(b) restart, empty data dir: s to /health ok / to views ready",
            f"{cold.health_s:.1f} / {cold.view_s:.1f} s (n=1)",
            f"{cold.view_s / baseline.view_s:.2f}x empty worker ({base})",
            f"{records:,} changelog records at {records / cold.view_s:,.0f}/s "
            f"(incl. start-up), {cores()} cores",
        ),
        Row(
            "5 memory",
            "peak RSS of a worker holding the keys",
            f"{mib(cold.peak_rss)} rebuilt / {mib(warm.peak_rss)} reopened (n=1)",
            f"{cold.peak_rss / baseline.peak_rss:.2f}x / "
            f"{warm.peak_rss / baseline.peak_rss:.2f}x empty worker ({mib(baseline.peak_rss)})",
            f"{held}; VmHWM from /proc",
        ),
    ]
