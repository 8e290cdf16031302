"""Deployments of the tests' own, and checks of what the workers answer (reading the
derived topics: pipeline.dev.audit).

Workers run as separate processes (pipeline.dev.workers); each test deployment has its own app id
and topic prefix, so tests never see each other's topics, consumer groups or table state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from pipeline.dev import expected
from pipeline.dev.loadgen import ShopEvent
from pipeline.dev.workers import Deployment, WorkerProcess
from pipeline.kafka.offsets import watermarks
from pipeline.settings import Settings
from tests.integration.conftest import StackInfo


def deployment(
    stack: StackInfo, name: str, root: Path, guarantee: str = "at_least_once"
) -> Deployment:
    """A deployment of its own (app id and topic prefix) on the session's stack."""
    return Deployment(
        name=name,
        root=root,
        base_env=stack.env,
        extra_env={"PIPELINE_PROCESSING_GUARANTEE": guarantee},
    )


@dataclass(frozen=True)
class TransactionTopics:
    """A one-partition source and sink of a test's own, and a group name, for tests that
    drive a transaction against the broker by hand."""

    name: str
    source: str
    sink: str
    group: str


def transaction_topics(settings: Settings, kind: str) -> TransactionTopics:
    name = f"it-{kind}-{uuid.uuid4().hex[:8]}"
    topics = TransactionTopics(name, f"{name}-in", f"{name}-out", f"{name}-group")
    admin = AdminClient(settings.kafka_client_config())
    created = admin.create_topics([NewTopic(t, 1, 1) for t in (topics.source, topics.sink)])
    for future in created.values():
        future.result(30)
    return topics


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-watermarks"})
    try:
        return {partition: high for partition, (_, high) in watermarks(consumer, topic).items()}
    finally:
        consumer.close()


def owns_partitions(worker: WorkerProcess) -> bool:
    """Whether the worker is in its group with partitions of its own."""
    health = worker.health()
    return health is not None and health["assigned_partitions"] > 0


def _view_differences(worker: WorkerProcess, events: list[ShopEvent]) -> Iterator[str]:
    """Each view that does not answer what ``events`` imply, as it answered."""
    for user_id, user in expected.user_stats(events).items():
        status, body = worker.get(f"/users/{user_id}/orders")
        if status != 200 or (body["order_count"], body["total_spent_cents"]) != (
            user.order_count,
            user.total_spent_cents,
        ):
            yield (
                f"/users/{user_id}/orders answered {status} {body}, not {user.order_count} "
                f"orders, {user.total_spent_cents} cents"
            )
    for sku, available in expected.stock(events).items():
        status, body = worker.get(f"/stock/{sku}")
        if status != 200 or body["available"] != available:
            yield f"/stock/{sku} answered {status} {body}, not {available} available"


def views_match(worker: WorkerProcess, events: list[ShopEvent]) -> bool:
    return next(_view_differences(worker, events), None) is None


def view_mismatches(worker: WorkerProcess, events: list[ShopEvent], most: int = 10) -> list[str]:
    """The first ``most`` views that differ from what ``events`` imply (for a failure's
    message: lost or doubled events show as counts off by some)."""
    return list(islice(_view_differences(worker, events), most))


def points_match(worker: WorkerProcess, events: list[ShopEvent]) -> bool:
    """Every user's points, as the points service answers them, equal what the orders imply."""
    for user_id, points in expected.points(events).items():
        status, body = worker.get(f"/users/{user_id}/points")
        if status != 200 or body["points"] != points:
            return False
    return True


PIPELINE = str(Path(sys.executable).with_name("pipeline"))


def run_pipeline(
    env: dict[str, str], *args: str, timeout: float = 180.0
) -> subprocess.CompletedProcess[str]:
    """A `pipeline` command with exactly these PIPELINE_* settings (no env file is read)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return subprocess.run(
        [PIPELINE, *args],
        env={**clean, **env, "PIPELINE_ENV_FILE": os.devnull},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
