"""State follows a worker's share: each worker restores and keeps the table partitions it is
assigned, and removes the copies of the ones a rebalance took away (after
PIPELINE_STATE_CLEANUP_DELAY_S). With 1, 2 and 4 workers and no standbys, each holds 1/N of
the partitions; the tables stay exact through every rebalance."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.services import shop
from pipeline.settings import Settings
from tests.integration.conftest import StackInfo
from tests.integration.harness import views_match

pytestmark = pytest.mark.integration

TABLES = len(shop(Settings()).tables)
PARTITIONS = 8


def held(worker: WorkerProcess) -> list[Path]:
    """The table partition databases on the worker's disk."""
    return sorted((worker.data_dir / "v1" / "tables").glob("*.db"))


def size(worker: WorkerProcess) -> int:
    return sum(
        file.stat().st_size for db in held(worker) for file in db.rglob("*") if file.is_file()
    )


def test_each_worker_keeps_its_share_of_the_state(stack: StackInfo, tmp_path: Path) -> None:
    name = f"it-share-{uuid.uuid4().hex[:8]}"
    shop = Deployment(
        name=name,
        root=tmp_path,
        base_env=stack.env,
        extra_env={"PIPELINE_STATE_CLEANUP_DELAY_S": "2"},
    )
    events = list(generate(LoadConfig(users=400, orders=2_000, skus=100, seed=17)))
    workers: list[WorkerProcess] = []
    figures = []
    try:
        for count in (1, 2, 4):
            while len(workers) < count:
                workers.append(shop.worker(f"w{len(workers) + 1}").start())
            for worker in workers:
                worker.wait_healthy()
            if count == 1:
                assert send(events, shop.settings, progress=False).failed == 0
            share = TABLES * PARTITIONS // count
            wait_for(
                f"each of {count} workers to hold {share} partitions",
                lambda share=share: all(len(held(worker)) == share for worker in workers),
                timeout=120,
            )
            for worker in workers:
                wait_for("exact views", lambda w=worker: views_match(w, events), timeout=120)
            figures.append((count, [size(worker) // 1024 for worker in workers]))
    finally:
        for worker in workers:
            worker.stop()
    print("\nworkers: table disk per worker (KiB)")
    for count, sizes in figures:
        print(f"  {count}: {sizes}")
    whole = sum(figures[0][1])
    for count, sizes in figures[1:]:
        # RocksDB files of each partition differ a little; each share is about 1/N.
        assert max(sizes) < whole * 1.5 / count, (count, sizes, whole)
