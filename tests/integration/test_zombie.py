"""A zombie under exactly_once: a worker paused (SIGSTOP) past its session timeout while
orders flow, its partitions taken over by the other worker, then resumed (SIGCONT).

Its open transaction and the events it holds belong to a group generation that is gone: the
broker must reject its offsets (KIP-447 fencing through the group metadata), and it must
abort and exit, or rejoin as a new member, without one committed write. Checked through a
read_committed consumer of every derived topic: zero duplicates, zero missing, and the
tables equal to the input.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.dev.audit import derived_tallies
from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, views_match

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_S = 15.0  # pipeline.streaming.app


@pytest.mark.timeout(900)
def test_a_zombie_worker_gets_no_write_committed(stack: StackInfo, tmp_path: Path) -> None:
    shop = deployment(stack, f"it-zombie-{uuid.uuid4().hex[:8]}", tmp_path, "exactly_once")
    events = list(generate(LoadConfig(users=60, orders=6000, skus=20, seed=11)))
    survivor = shop.worker("survivor").start()
    zombie = shop.worker("zombie").start()
    try:
        survivor.wait_healthy()
        zombie.wait_healthy()
        topic = shop.names.order_created
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(send, events, shop.settings, rate=150.0, progress=False)
            wait_for(
                "the zombie to be busy",
                lambda: zombie.metric("pipeline_events_processed_total", topic=topic) >= 300,
            )
            committed_before = zombie.metric("pipeline_transactions_committed_total")
            rebalances = survivor.metric("pipeline_rebalances_total")
            os.kill(zombie.pid, signal.SIGSTOP)
            paused = time.monotonic()
            # The group rebalances without it; the survivor takes its partitions.
            wait_for(
                "the survivor to take over",
                lambda: survivor.metric("pipeline_rebalances_total") > rebalances,
                timeout=120,
            )
            time.sleep(max(0.0, SESSION_TIMEOUT_S + 10 - (time.monotonic() - paused)))
            os.kill(zombie.pid, signal.SIGCONT)
            resumed = time.monotonic()
            report = sent.result()
        assert report.failed == 0
        wait_for("the views to match the input", lambda: views_match(survivor, events), 300)
        assert survivor.running()
        log = zombie.log.read_text(errors="replace")
        fenced = "the transaction cannot be committed" in log
        if zombie.running():
            outcome = "rejoined" + (" after aborting" if fenced else "")
        else:
            assert zombie.process is not None
            outcome = f"exited with {zombie.process.returncode}"
            assert fenced, "the zombie exited without saying its transaction was refused"
        tallies = derived_tallies(shop.settings, events)
        print(
            f"\nzombie: paused {resumed - paused:.1f} s after {committed_before:.0f} "
            f"transactions, then {outcome}; read_committed: "
            + "; ".join(f"{t}: {v}" for t, v in tallies.items())
        )
        wrong = {t: v for t, v in tallies.items() if v.duplicates or v.missing}
        assert not wrong, wrong
    finally:
        if zombie.running():
            os.kill(zombie.pid, signal.SIGCONT)
        zombie.kill()
        survivor.stop()
