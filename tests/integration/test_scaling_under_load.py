"""Scale-out and scale-in under load: three workers hold the tables while orders flow; a
fourth joins, one leaves (SIGTERM), then one is SIGKILLed. Throughout, users are asked
through every live worker, and every answer keeps the rules of the views: no 502 or 500, no
404 for a user with orders, no count above what was sent, no count below what was already
applied unless the answer says it comes from a copy that is behind. At the end the tables
are exact through the two workers left."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pipeline.dev import expected
from pipeline.dev.loadgen import LoadConfig, ShopEvent, generate, send
from pipeline.dev.workers import WorkerProcess, wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, views_match

pytestmark = pytest.mark.integration

RATE = 120.0  # events per second during the scaling: about 14 s of them


def ask(worker: WorkerProcess, user: str) -> tuple[int, dict[str, object], dict[str, str]]:
    request = urllib.request.Request(f"{worker.url}/users/{user}/orders")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


class Watcher(threading.Thread):
    """Asks random users through every live worker until told to stop; judges each answer."""

    def __init__(
        self, workers: list[WorkerProcess], floor: dict[str, int], ceiling: dict[str, int]
    ) -> None:
        super().__init__(daemon=True)
        self.workers, self.floor, self.ceiling = workers, floor, ceiling
        self.kinds: Counter[str] = Counter()
        self.wrong: list[str] = []
        self.done = threading.Event()

    def judge(self, worker: WorkerProcess, user: str) -> None:
        try:
            status, body, headers = ask(worker, user)
        except OSError:  # the worker is going or gone: no answer, not a wrong one
            self.kinds["no connection"] += 1
            return
        self.kinds[str(status)] += 1
        if status == 503 and "Retry-After" in headers:
            return
        if status != 200:
            self.wrong.append(f"{worker.label} {user}: {status} {body}")
            return
        count = int(str(body["order_count"]))
        behind = (
            headers.get("X-Pipeline-Copy") == "copy"
            and headers.get("X-Pipeline-Copy-Lag", "1") != "0"
        )
        if count > self.ceiling[user] or (count < self.floor[user] and not behind):
            self.wrong.append(f"{worker.label} {user}: {count} orders {headers}")

    def run(self) -> None:
        users = sorted(self.floor)
        while not self.done.is_set():
            for worker in list(self.workers):
                if worker.running():
                    for user in random.sample(users, min(8, len(users))):
                        self.judge(worker, user)
            time.sleep(0.2)


def test_workers_join_leave_and_die_under_load_and_the_views_keep_the_truth(
    stack: StackInfo, tmp_path: Path
) -> None:
    shop = deployment(stack, f"it-scale-{uuid.uuid4().hex[:8]}", tmp_path)
    events = list(generate(LoadConfig(users=40, orders=3_000, skus=20, seed=21)))
    split = len(events) // 2  # users register over time: these users have orders by then
    before: list[ShopEvent] = events[:split]
    floor = {user: stats.order_count for user, stats in expected.user_stats(before).items()}
    ceiling = {user: stats.order_count for user, stats in expected.user_stats(events).items()}
    workers = [shop.worker(f"w{n}").start() for n in (1, 2, 3)]
    watcher = Watcher(workers, floor, ceiling)
    try:
        for worker in workers:
            worker.wait_healthy()
        assert send(before, shop.settings, progress=False).failed == 0
        wait_for("the first orders applied", lambda: views_match(workers[0], before), timeout=120)

        watcher.start()
        report: list[int] = []
        feeding = threading.Thread(
            target=lambda: report.append(
                send(events[split:], shop.settings, rate=RATE, progress=False).failed
            )
        )
        feeding.start()
        time.sleep(2)
        workers.append(shop.worker("w4").start())  # joins
        workers[3].wait_healthy()
        time.sleep(2)
        workers[1].stop()  # leaves cleanly
        time.sleep(2)
        workers[2].kill()  # dies
        feeding.join(timeout=300)
        assert report == [0]
        live = [worker for worker in workers if worker.running()]
        assert [worker.label for worker in live] == ["w1", "w4"]
        for worker in live:
            wait_for("exact views", lambda w=worker: views_match(w, events), timeout=240)
    finally:
        watcher.done.set()
        watcher.join(timeout=30)
        for worker in workers:
            worker.stop()
    print(f"\nanswers while scaling: {dict(watcher.kinds)}")
    assert watcher.wrong == []
    assert watcher.kinds["200"] > 0
    assert set(watcher.kinds) <= {"200", "503", "no connection"}
