"""Restarts and crashes: state kept, state rebuilt, nothing lost or counted twice."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from pipeline.agents.orders import USER_STATS
from pipeline.agents.stock import STOCK
from pipeline.dev.audit import read_topic
from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, views_match

pytestmark = pytest.mark.integration


def changelog_read(worker: WorkerProcess, metric: str) -> float:
    """Changelog records a worker read at start: ``restored`` by the bulk restore
    (pipeline.engine.restore), ``recovered`` by Faust's recovery after it."""
    return sum(
        worker.metric(f"pipeline_changelog_{metric}_total", table=table)
        for table in (USER_STATS.name, STOCK.name)
    )


def new_deployment(stack: StackInfo, tmp_path: Path, kind: str) -> Deployment:
    name = f"it-{kind}-{uuid.uuid4().hex[:8]}"
    return deployment(stack, name, tmp_path)


def test_restart_resumes_from_its_state_dir_and_an_empty_one_rebuilds(
    stack: StackInfo, tmp_path: Path
) -> None:
    shop = new_deployment(stack, tmp_path, "restart")
    events = list(generate(LoadConfig(users=20, orders=200, skus=10, seed=11)))
    first = shop.worker("first").start().wait_healthy()
    try:
        assert send(events, shop.settings, progress=False).failed == 0
        wait_for("the first worker's views", lambda: views_match(first, events))
    finally:
        first.stop()
    names = shop.names
    changelog_records = sum(
        len(read_topic(shop.settings, names.changelog(table)))
        for table in (USER_STATS.name, STOCK.name)
    )
    assert changelog_records > 0

    kept = shop.worker("kept-state", data_dir=first.data_dir).start()
    try:
        kept.wait_healthy()
        assert views_match(kept, events)
        # RocksDB keeps the last changelog offset it applied: nothing is read again.
        assert changelog_read(kept, "records_restored") == 0
        assert changelog_read(kept, "events_recovered") < changelog_records
    finally:
        kept.stop()

    fresh = shop.worker("empty-state").start()
    try:
        fresh.wait_healthy()
        # The whole changelog, bulk-restored before the worker consumed.
        assert changelog_read(fresh, "records_restored") == changelog_records
        assert views_match(fresh, events)
    finally:
        fresh.stop()


def test_a_killed_worker_neither_loses_nor_double_counts(stack: StackInfo, tmp_path: Path) -> None:
    """SIGKILL mid-stream (no commit, no clean close), then a restart on the same state dir."""
    shop = new_deployment(stack, tmp_path, "crash")
    events = list(generate(LoadConfig(users=30, orders=1500, skus=10, seed=5)))
    victim = shop.worker("victim").start().wait_healthy()
    order_topic = shop.names.order_created
    sender = threading.Thread(
        target=send, args=(events, shop.settings), kwargs={"rate": 500.0, "progress": False}
    )
    sender.start()
    try:
        wait_for(
            "the victim to be mid-stream",
            lambda: victim.metric("pipeline_events_processed_total", topic=order_topic) >= 300,
        )
        victim.kill()
        survivor = shop.worker("survivor", data_dir=victim.data_dir).start()
        try:
            survivor.wait_healthy()
            sender.join()
            wait_for("the survivor's views", lambda: views_match(survivor, events))
        finally:
            survivor.stop()
    finally:
        victim.kill()
        sender.join()
