"""The analytics service with two workers on the real stack: every SKU's hourly final and
every window of both views (SKU sales per hour, user spend per sliding day) equal values
computed from the input alone, asked of both workers, the other's keys routed.

Two partitions per topic, one each. The input's event times span three hours; re-keyed
by SKU, one order partition drained ahead of the other would make the other's lines late
(docs/windows.md on skew), so the grace covers the whole span. Once the workers have the
input, one closing order per user, 40 hours of event time later, carries a line of every
SKU: each partition's stream time passes every input window's end + grace. The event
times are in the past (60 hours ago), beyond the local stack's 24-hour topic retention:
the topics stamped with them are made beforehand to keep their records."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.dev.loadgen import send
from pipeline.dev.workers import ANALYTICS_APP, Deployment, WorkerProcess, wait_for
from pipeline.kafka.topics import admin_client
from pipeline.services import analytics_settings
from pipeline.streaming.event_time import iso
from tests.integration.conftest import StackInfo
from tests.integration.harness import owns_partitions
from tests.integration.test_analytics_service import HOUR, MINUTE, finals, order

pytestmark = pytest.mark.integration

PARTITIONS = 2
SKUS = ["A", "B", "C", "D", "E"]
USERS = [f"u{number}" for number in range(8)]
GRACE = 4 * HOUR
# The input windows start before this; the closing orders' windows after it.
INPUT_WINDOWS_END = 5 * HOUR


def day_starts(created_at: int) -> range:
    """The starts of the 24-hour windows, advancing hourly, ``created_at`` falls in."""
    hour = created_at // HOUR * HOUR
    return range(hour - 23 * HOUR, hour + HOUR, HOUR)


def test_two_workers_finals_and_views_equal_the_input(stack: StackInfo, tmp_path: Path) -> None:
    name = f"it-analytics2-{uuid.uuid4().hex[:8]}"
    shop = Deployment(
        name=name,
        root=tmp_path,
        base_env=stack.env,
        extra_env={
            "PIPELINE_PARTITIONS": str(PARTITIONS),
            "PIPELINE_ANALYTICS_GRACE_MS": str(GRACE),
        },
    )
    analytics = analytics_settings(shop.settings)
    admin = admin_client(shop.settings)
    kept = [f"{analytics.app_id}-sales_by_sku", shop.names.sku_sales_hourly]
    created = admin.create_topics(
        [NewTopic(topic, PARTITIONS, 1, config={"retention.ms": "-1"}) for topic in kept]
    )
    for future in created.values():
        future.result(30)

    base = (int(time.time() * 1000) // HOUR - 60) * HOUR
    orders = [
        order(
            number,
            USERS[number % len(USERS)],
            base + (number * 7 * MINUTE) % (3 * HOUR),
            (SKUS[number % len(SKUS)], 1 + number % 3, 100 + 10 * (number % 4)),
            (SKUS[(number * 3 + 1) % len(SKUS)], 1, 25),
        )
        for number in range(60)
    ]
    hourly: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    spend: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for event in orders:
        value = event.record
        created_at = value["created_at"]
        hour = created_at // HOUR * HOUR
        by_sku: dict[str, tuple[int, int]] = {}
        for item in value["items"]:
            units, revenue = by_sku.get(item["sku"], (0, 0))
            line_revenue = item["quantity"] * item["unit_price_cents"]
            by_sku[item["sku"]] = (units + item["quantity"], revenue + line_revenue)
        for sku, (units, revenue) in by_sku.items():
            totals = hourly[sku, hour]
            totals[0] += units
            totals[1] += revenue
            totals[2] += 1
        for start in day_starts(created_at):
            totals = spend[value["user_id"], start]
            totals[0] += value["total_cents"]
            totals[1] += 1
    closing_at = base + 40 * HOUR
    closing = [
        order(100 + number, user, closing_at, *[(sku, 1, 1) for sku in SKUS])
        for number, user in enumerate(USERS)
    ]

    workers: list[WorkerProcess] = []
    try:
        for label in ("analytics-a", "analytics-b"):
            workers.append(shop.worker(label, app=ANALYTICS_APP).start().wait_healthy())
        wait_for("both workers to hold partitions", lambda: all(map(owns_partitions, workers)))
        assert send(orders, shop.settings, progress=False).failed == 0

        def has_input(worker: WorkerProcess) -> bool:
            for user in USERS:
                status, body = worker.get(f"/users/{user}/spend")
                counted = sum(w["orders"] for w in body["windows"]) if status == 200 else -1
                if counted != sum(count for (key, _), (_, count) in spend.items() if key == user):
                    return False
            return True

        wait_for("the input in the views", lambda: all(map(has_input, workers)), timeout=120)
        assert send(closing, shop.settings, progress=False).failed == 0

        expected_finals = {
            (sku, start, units, revenue, count)
            for (sku, start), (units, revenue, count) in hourly.items()
        }

        def input_finals() -> set[tuple[str, int, int, int, int]]:
            return {final for final in finals(shop) if final[1] < base + INPUT_WINDOWS_END}

        try:
            wait_for("every input hour's final", lambda: input_finals() == expected_finals, 180)
        except TimeoutError:
            raise AssertionError(f"{sorted(input_finals())} != {sorted(expected_finals)}") from None

        window_range = f"?from={base - 24 * HOUR}&to={base + INPUT_WINDOWS_END}"
        for worker in workers:
            for sku in SKUS:
                status, body = worker.get(f"/skus/{sku}/sales{window_range}")
                assert status == 200, body
                got = [
                    (w["start"], w["units"], w["revenue_cents"], w["orders"], w["final"])
                    for w in body["windows"]
                ]
                want = sorted(
                    (iso(start), units, revenue, count, True)
                    for (key, start), (units, revenue, count) in hourly.items()
                    if key == sku
                )
                assert got == want, (worker.label, sku)
            for user in USERS:
                status, body = worker.get(f"/users/{user}/spend{window_range}")
                assert status == 200, body
                got = [
                    (w["start"], w["spent_cents"], w["orders"], w["final"]) for w in body["windows"]
                ]
                want = sorted(
                    (iso(start), spent, count, True)
                    for (key, start), (spent, count) in spend.items()
                    if key == user
                )
                assert got == want, (worker.label, user)
        routed = sum(
            worker.metric("pipeline_routed_requests_total", table=table)
            for worker in workers
            for table in ("sku_sales", "user_spend")
        )
        assert routed > 0  # each worker answered keys of the other's partitions
    finally:
        for worker in workers:
            worker.stop()
