"""Broker faults while workers run: the only broker restarted, one broker of three lost.

Each test has a stack of its own, so stopping a broker disturbs no other test. The stream is
sent while the fault happens; at the end every user's stats and every SKU's stock must equal
what the input says: nothing lost, nothing counted twice, nothing dead-lettered. Both run
under both guarantees; every derived event is in its topic (read_committed), under
exactly_once exactly once.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from pipeline.dev.loadgen import LoadConfig, SendReport, ShopEvent, generate, send
from pipeline.dev.stack.launcher import Stack
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.kafka.offsets import record_count
from pipeline.services import shop as shop_topology
from pipeline.settings import read_env_file
from pipeline.streaming.transactions import EXIT_TRANSACTION_FAILED
from tests.integration.exactly_once import assert_derived_exact
from tests.integration.harness import views_match

pytestmark = pytest.mark.integration


@contextmanager
def own_stack(root: Path, brokers: int) -> Iterator[Stack]:
    stack = Stack(root)
    stack.up(brokers=brokers)
    try:
        yield stack
    finally:
        stack.down()


def shop_on(stack: Stack, root: Path, kind: str, guarantee: str = "at_least_once") -> Deployment:
    # The stack's env file also carries its replication factor (3 on a 3-broker stack).
    env = {**os.environ, **read_env_file(stack.env_file)}
    guaranteed = {"PIPELINE_PROCESSING_GUARANTEE": guarantee}
    return Deployment(f"it-{kind}-{uuid.uuid4().hex[:8]}", root, env, guaranteed)


@contextmanager
def sending(events: list[ShopEvent], shop: Deployment, rate: float) -> Iterator[Future[SendReport]]:
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(send, events, shop.settings, rate=rate, progress=False)


def mid_stream(worker: WorkerProcess, shop: Deployment, orders: int) -> None:
    topic = shop.names.order_created
    wait_for(
        f"{orders} orders processed",
        lambda: worker.metric("pipeline_events_processed_total", topic=topic) >= orders,
    )


def assert_nothing_lost_or_doubled(
    worker: WorkerProcess, shop: Deployment, events: list[ShopEvent], report: SendReport
) -> None:
    assert report.failed == 0
    wait_for("the views to match the input", lambda: views_match(worker, events), timeout=300)
    assert worker.running()
    consumer = Consumer({**shop.settings.kafka_client_config(), "group.id": "fault-check"})
    try:
        for source in shop_topology(shop.settings).sources:
            assert record_count(consumer, shop.names.dead_letters(source)) == 0, source
    finally:
        consumer.close()


def restarted_if_its_transaction_failed(worker: WorkerProcess) -> WorkerProcess:
    """What a supervisor does: a worker under exactly_once whose transaction failed (the
    broker away longer than the transaction timeout) exits with EXIT_TRANSACTION_FAILED,
    and its replacement resumes from the committed offsets. Any other exit is a failure."""
    if worker.running() or worker.process is None:
        return worker
    assert worker.process.returncode == EXIT_TRANSACTION_FAILED, worker.failure("exited")
    print("\nthe worker's transaction failed while the broker was away: restarted")
    return worker.replacement().start().wait_healthy()


def wait_caught_up(live: list[WorkerProcess], events: list[ShopEvent]) -> None:
    """Wait for the views of the worker running, ``live[0]``, to match ``events``; a worker
    whose transaction failed is replaced there by its restart (so the caller stops the one
    running at the end)."""

    def caught_up() -> bool:
        live[0] = restarted_if_its_transaction_failed(live[0])
        try:
            return views_match(live[0], events)
        except OSError:
            # It may be exiting while it answers (its transaction failed: its loop blocks in
            # the abort, then the process ends and resets the connection): once it has
            # exited, the next poll replaces it.
            process = live[0].process
            assert process is not None
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                raise live[0].failure("stopped answering but did not exit") from None
            return False

    wait_for("the views to match the input", caught_up, timeout=600)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_only_broker_restarted_mid_stream(tmp_path: Path, guarantee: str) -> None:
    with own_stack(tmp_path / "stack", brokers=1) as stack:
        shop = shop_on(stack, tmp_path / "shop", "broker-restart", guarantee)
        events = list(generate(LoadConfig(users=30, orders=1200, skus=10, seed=7)))
        # The worker running now: under exactly_once, maybe a replacement (wait_caught_up).
        live = [shop.worker("w").start().wait_healthy()]
        try:
            with sending(events, shop, rate=300.0) as sent:
                mid_stream(live[0], shop, 200)
                stack.stop_server("kafka-1")
                stack.start_server("kafka-1")
                back = time.monotonic()
                report = sent.result()
            wait_caught_up(live, events)
            assert_nothing_lost_or_doubled(live[0], shop, events, report)
            applied = time.monotonic() - back
            assert_derived_exact(
                shop.settings,
                events,
                guarantee,
                f"broker back ({guarantee}): every event applied {applied:.1f} s later",
            )
        finally:
            live[0].stop()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_one_broker_of_three_killed_mid_stream(tmp_path: Path, guarantee: str) -> None:
    """Replication factor 3, min.insync.replicas 2, acks=all: one broker down loses nothing
    (under exactly_once the transaction coordinator may be the broker killed)."""
    with own_stack(tmp_path / "stack", brokers=3) as stack:
        shop = shop_on(stack, tmp_path / "shop", "broker-loss", guarantee)
        assert shop.settings.replication_factor == 3
        events = list(generate(LoadConfig(users=30, orders=1200, skus=10, seed=8)))
        live = [shop.worker("w").start().wait_healthy()]
        try:
            with sending(events, shop, rate=300.0) as sent:
                mid_stream(live[0], shop, 200)
                stack.stop_server("kafka-2", kill=True)
                killed = time.monotonic()
                report = sent.result()
            wait_caught_up(live, events)
            assert_nothing_lost_or_doubled(live[0], shop, events, report)
            assert_derived_exact(
                shop.settings,
                events,
                guarantee,
                f"broker killed ({guarantee}): every event applied "
                f"{time.monotonic() - killed:.1f} s later",
            )
        finally:
            live[0].stop()
