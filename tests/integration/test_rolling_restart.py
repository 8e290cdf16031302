"""A rolling restart under load, with dynamic membership: each of two workers is stopped
(SIGTERM: it leaves the group) and started again on its state dir, one at a time, while
orders flow. Every stop and every start rebalances the group under the survivor's feet;
nothing may be lost or doubled."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, view_mismatches, views_match

pytestmark = pytest.mark.integration

RATE = 100.0  # events per second while the workers restart


def test_a_rolling_restart_under_load_loses_and_doubles_nothing(
    stack: StackInfo, tmp_path: Path
) -> None:
    shop = deployment(stack, f"it-rolling-{uuid.uuid4().hex[:8]}", tmp_path)
    events = list(generate(LoadConfig(users=40, orders=2_400, skus=20, seed=23)))
    split = len(events) // 8
    workers = [shop.worker("w1").start(), shop.worker("w2").start()]
    try:
        for worker in workers:
            worker.wait_healthy()
        assert send(events[:split], shop.settings, progress=False).failed == 0
        failed: list[int] = []
        feeding = threading.Thread(
            target=lambda: failed.append(
                send(events[split:], shop.settings, rate=RATE, progress=False).failed
            )
        )
        feeding.start()
        for index in (1, 0):
            time.sleep(2)
            workers[index].stop()
            time.sleep(2)
            workers[index] = shop.worker(
                workers[index].label, data_dir=workers[index].data_dir
            ).start()
            workers[index].wait_healthy()
        feeding.join(timeout=300)
        assert failed == [0]
        for worker in workers:
            try:
                wait_for("exact views", lambda w=worker: views_match(w, events), timeout=180)
            except TimeoutError:
                raise AssertionError(
                    f"{worker.label}'s views 180 s after the feed: "
                    f"{view_mismatches(worker, events)}; logs in {tmp_path}"
                ) from None
    finally:
        for worker in workers:
            worker.stop()
