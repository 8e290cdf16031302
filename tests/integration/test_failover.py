"""A worker dies, is restarted or not: how long until every partition is processed again,
with static group membership (PIPELINE_WORKER_ID) and with dynamic membership.

Two workers (one standby replica each, as a failover setup would run). The victim is
SIGKILLed twice: first restarted at once on its state dir (same worker id and web port),
then left dead. Each time an order for a user and a SKU on every partition is sent right
after the kill, and the figure is the seconds from the kill until the survivor's views show
all of them. Run with -s to see the figures (docs/guarantees.md quotes them).

Static membership must bring the restarted worker back without a rebalance: the survivor's
``pipeline_rebalances_total`` does not move. The same run checks the operators' metrics on a
real worker: lags per partition, rebalances, latency and batch sizes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from pipeline.dev.loadgen import ShopEvent, order, send
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.engine.web import partition_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import owns_partitions, views_match

pytestmark = pytest.mark.integration

PARTITIONS = 8


def one_key_per_partition(prefix: str) -> list[str]:
    """A key for each partition, in partition order (murmur2, as every producer of ours)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < PARTITIONS:
        key = f"{prefix}-{index}"
        found.setdefault(partition_for(key.encode(), PARTITIONS), key)
        index += 1
    return [found[partition] for partition in range(PARTITIONS)]


USERS = one_key_per_partition("failover-user")
SKUS = one_key_per_partition("failover-sku")


def round_of_orders(number: int) -> list[ShopEvent]:
    """One order per partition: each user buys one unit of the SKU of the same index."""
    at_ms = 1_767_225_600_000 + number
    return [
        order(
            user,
            f"{user}-order-{number}",
            [{"sku": sku, "quantity": 1, "unit_price_cents": 100}],
            at_ms,
        )
        for user, sku in zip(USERS, SKUS, strict=True)
    ]


def seconds_until_processed(
    survivor: WorkerProcess, deployment: Deployment, sent: list[ShopEvent], killed_at: float
) -> float:
    """Send one more round of orders; the seconds from ``killed_at`` until the survivor's
    views (its own partitions and, routed, the other worker's) show every order sent."""
    sent += round_of_orders(len(sent) // PARTITIONS)
    assert send(sent[-PARTITIONS:], deployment.settings, progress=False).failed == 0
    wait_for("every partition to be processed", lambda: views_match(survivor, sent), 180, 0.1)
    return time.monotonic() - killed_at


def check_operator_metrics(worker: WorkerProcess, deployment: Deployment) -> None:
    samples = worker.samples()
    names = deployment.names
    lags = {
        (sample.labels["topic"], int(sample.labels["partition"])): sample.value
        for sample in samples
        if sample.name == "pipeline_consumer_lag"
    }
    # The survivor holds every partition of every source, all caught up.
    sources = {names.order_created, names.stock_adjusted, names.user_registered}
    for topic in sources:
        assert {lags.get((topic, partition)) for partition in range(PARTITIONS)} == {0.0}
    assert worker.metric("pipeline_rebalances_total") >= 2
    assert worker.metric("pipeline_rebalance_seconds_count") >= 2
    assert worker.metric("pipeline_processing_latency_seconds_count", topic=names.order_created)
    assert worker.metric("pipeline_batch_size_count") > 0


@pytest.mark.parametrize("membership", ["static", "dynamic"])
def test_failover_with_and_without_a_restart(
    stack: StackInfo, tmp_path: Path, membership: str
) -> None:
    name = f"it-failover-{membership}-{uuid.uuid4().hex[:8]}"
    deployment = Deployment(
        name=name,
        root=tmp_path,
        base_env=stack.env,
        extra_env={"PIPELINE_STANDBY_REPLICAS": "1", "PIPELINE_PARTITIONS": str(PARTITIONS)},
    )

    def worker(label: str) -> WorkerProcess:
        return deployment.worker(label, worker_id=label if membership == "static" else None)

    # The survivor joins first, so it is the group's leader: the victim's restart is a
    # follower's (a restarted static leader was not measured).
    survivor = worker("survivor").start()
    workers = [survivor]
    figures: dict[str, float] = {}
    try:
        survivor.wait_healthy()
        victim = worker("victim").start()
        workers.append(victim)
        victim.wait_healthy()
        wait_for("both workers to own partitions", lambda: all(map(owns_partitions, workers)))
        sent: list[ShopEvent] = []
        seconds_until_processed(survivor, deployment, sent, time.monotonic())
        survivor.wait_healthy()
        standby_lags = [s for s in survivor.samples() if s.name == "pipeline_standby_lag"]
        # The survivor keeps a standby of every table partition the victim owns.
        assert standby_lags and all(sample.value >= 0 for sample in standby_lags)
        rebalances = survivor.metric("pipeline_rebalances_total")

        victim.kill()
        killed_at = time.monotonic()
        victim = victim.replacement().start()
        workers[1] = victim
        figures["killed, restarted at once"] = seconds_until_processed(
            survivor, deployment, sent, killed_at
        )
        survivor_rebalanced = survivor.metric("pipeline_rebalances_total") > rebalances
        assert survivor_rebalanced == (membership == "dynamic")

        for each in workers:
            each.wait_healthy()
        wait_for("both workers to own partitions", lambda: all(map(owns_partitions, workers)))
        victim.kill()
        figures["killed, not restarted"] = seconds_until_processed(
            survivor, deployment, sent, time.monotonic()
        )
        survivor.wait_healthy()
        check_operator_metrics(survivor, deployment)
    finally:
        for each in workers:
            each.stop()
    for case, seconds in figures.items():
        print(f"\n{membership} membership, {case}: every partition processed after {seconds:.1f} s")
