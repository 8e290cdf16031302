"""Views through a worker's death: two workers hold the tables, one is SIGKILLed (left dead,
or restarted at once as a static member), and every user is asked through the survivor
until the partitions are processed again. A view never lies: no 502, no 404 for a user with
orders, no wrong count; a 503 only while no copy of the key is at hand. With a standby
replica the survivor answers from it throughout."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pipeline.dev import expected
from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import Deployment, WorkerProcess, http_json, wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import views_match

pytestmark = pytest.mark.integration

# The session timeout is 15 s: the survivor takes over after it, then recovers.
WATCH_SECONDS = 30.0


def watch(survivor: WorkerProcess, users: dict[str, int]) -> tuple[Counter[str], float]:
    """Ask every user (and one unknown) through the survivor four times a second for
    WATCH_SECONDS: the answers by kind, and the seconds from the first to the last non-200."""
    kinds: Counter[str] = Counter()
    started = time.monotonic()
    non_200_at: list[float] = []
    while time.monotonic() - started < WATCH_SECONDS:
        round_started = time.monotonic()
        for user, orders in users.items():
            status, body = http_json("GET", f"{survivor.url}/users/{user}/orders")
            if status == 200:
                kinds["200 right" if body["order_count"] == orders else "200 WRONG"] += 1
            else:
                kinds[str(status)] += 1
                non_200_at.append(time.monotonic() - started)
        status, _ = http_json("GET", f"{survivor.url}/users/no-such-user/orders")
        kinds[f"unknown user {status}"] += 1
        time.sleep(max(0.0, 0.25 - (time.monotonic() - round_started)))
    non_200 = non_200_at[-1] - non_200_at[0] + 0.25 if non_200_at else 0.0
    return kinds, non_200


def restored(worker: WorkerProcess) -> float:
    """Changelog records the worker bulk-restored so far (both tables)."""
    return sum(
        worker.metric("pipeline_changelog_records_restored_total", table=table)
        for table in ("user_order_stats", "stock")
    )


def run(
    stack: StackInfo, tmp_path: Path, standbys: int, restart: bool = False
) -> tuple[Counter[str], float]:
    """Kill the second of two workers and watch the survivor; with ``restart``, both are
    static members and the killed one is started again at once on its state dir."""
    name = f"it-failover-{standbys}-{uuid.uuid4().hex[:8]}"
    shop = Deployment(
        name=name,
        root=tmp_path / name,
        base_env=stack.env,
        extra_env={"PIPELINE_STANDBY_REPLICAS": str(standbys)},
    )
    events = list(generate(LoadConfig(users=40, orders=400, skus=10, seed=13)))
    users = {user: stats.order_count for user, stats in expected.user_stats(events).items()}

    def new_worker(label: str) -> WorkerProcess:
        return shop.worker(label, worker_id=label if restart else None)

    first = new_worker("first").start().wait_healthy()
    second = new_worker("second").start().wait_healthy()
    try:
        assert send(events, shop.settings, progress=False).failed == 0
        for worker in (first, second):
            wait_for("views through both workers", lambda w=worker: views_match(w, events))
        restored_before = restored(first)
        second.kill()
        if restart:
            second = second.replacement().start()
        kinds, non_200 = watch(first, users)
        kinds["answered from a copy"] = int(
            first.metric("pipeline_copy_answers_total", table="user_order_stats")
        )
        # After the takeover every key answers from its owner again, and exactly.
        wait_for("the survivor to own everything", lambda: views_match(first, events), timeout=60)
        # A standby takes over with what it holds: nothing to bulk-restore.
        kinds["restored at takeover"] = int(restored(first) - restored_before)
        print(
            f"\nstandbys={standbys}, restarted={restart}: answers {dict(kinds)}; "
            f"non-200 for {non_200:.1f} s"
        )
        return kinds, non_200
    finally:
        for worker in (first, second):
            worker.stop()


def assert_never_lied(kinds: Counter[str]) -> None:
    assert kinds["200 WRONG"] == 0
    assert kinds["404"] == 0, "a user with orders answered 404"
    assert kinds["502"] == 0
    allowed = {
        "200 right",
        "503",
        "unknown user 404",
        "unknown user 503",
        "answered from a copy",
        "restored at takeover",
    }
    assert set(kinds) <= allowed, kinds


def test_views_never_lie_while_a_worker_dies(stack: StackInfo, tmp_path: Path) -> None:
    with_standby, non_200_with_standby = run(stack, tmp_path, standbys=1)
    assert_never_lied(with_standby)
    # The standby holds a current copy of every partition the dead worker owned.
    assert with_standby["503"] == 0 and non_200_with_standby == 0.0
    assert with_standby["answered from a copy"] > 0
    assert with_standby["restored at takeover"] == 0


def test_views_never_lie_while_a_worker_dies_without_a_standby(
    stack: StackInfo, tmp_path: Path
) -> None:
    without_standby, _ = run(stack, tmp_path, standbys=0)
    assert_never_lied(without_standby)


def test_views_never_lie_while_a_static_worker_is_restarted_at_once(
    stack: StackInfo, tmp_path: Path
) -> None:
    """Without a standby: the dead worker's keys answer 503 until it is back, under the same
    worker id and with its state dir, and owns its partitions again without a rebalance."""
    restarted, _ = run(stack, tmp_path, standbys=0, restart=True)
    assert_never_lied(restarted)
