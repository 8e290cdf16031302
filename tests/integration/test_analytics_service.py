"""The analytics service on the real stack: finals of SKU hours against values computed
from the input alone, out-of-order events within the grace, a late one dead-lettered, a
SIGKILL mid-stream losing and doubling nothing, and windows restored from the changelog
alone closing and expiring (tombstones) on a worker that lost its state dir.

One partition per topic: stream time is then the whole input's (docs/windows.md on skew
between partitions). The event times span 57 hours in the past, beyond the local stack's
24-hour topic retention, which counts from the records' timestamps, now their event time:
the topics stamped with it are made beforehand to keep their records."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.dev.audit import decoded, read_topic
from pipeline.dev.loadgen import ShopEvent, send
from pipeline.dev.workers import ANALYTICS_APP, Deployment, wait_for
from pipeline.kafka.topics import admin_client
from pipeline.serde.codec import Codecs
from pipeline.services import analytics_settings
from pipeline.streaming.dead_letters import ERROR_CLASS
from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration

HOUR = 3_600_000
MINUTE = 60_000


def order(number: int, user: str, created_at: int, *items: tuple[str, int, int]) -> ShopEvent:
    return ShopEvent(
        "order_created",
        user,
        {
            "order_id": f"o{number}",
            "user_id": user,
            "items": [
                {"sku": sku, "quantity": quantity, "unit_price_cents": price}
                for sku, quantity, price in items
            ],
            "total_cents": sum(quantity * price for _, quantity, price in items),
            "created_at": created_at,
        },
    )


def keep_records(deployment: Deployment, *topics: str) -> None:
    """Make ``topics`` (one partition) with no time-based retention."""
    admin = admin_client(deployment.settings)
    config = {"retention.ms": "-1"}
    created = admin.create_topics([NewTopic(topic, 1, 1, config=config) for topic in topics])
    for future in created.values():
        future.result(30)


def finals(deployment: Deployment) -> list[tuple[str, int, int, int, int]]:
    settings = deployment.settings
    topic = deployment.names.sku_sales_hourly
    codecs = Codecs.from_settings(settings)
    codecs.prepare([topic])
    return [
        (
            record["sku"],
            int(record["window_start"].timestamp() * 1000),
            record["units"],
            record["revenue_cents"],
            record["orders"],
        )
        for record in decoded(codecs, topic, read_topic(settings, topic))
    ]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_hourly_finals_are_exact_through_a_kill_and_a_restore(
    stack: StackInfo, tmp_path: Path, guarantee: str
) -> None:
    name = f"it-analytics-{uuid.uuid4().hex[:8]}"
    shop = Deployment(
        name=name,
        root=tmp_path,
        base_env=stack.env,
        extra_env={
            "PIPELINE_PROCESSING_GUARANTEE": guarantee,
            "PIPELINE_PARTITIONS": "1",
            "PIPELINE_ANALYTICS_GRACE_MS": str(5 * MINUTE),
            "PIPELINE_ANALYTICS_RETENTION_MS": str(25 * HOUR),
        },
    )
    analytics = analytics_settings(shop.settings)
    keep_records(shop, f"{analytics.app_id}-sales_by_sku", shop.names.sku_sales_hourly)
    base = (int(time.time() * 1000) // HOUR - 60) * HOUR  # event time 60 h ago, on the hour
    first = [
        order(1, "u1", base + 10 * MINUTE, ("A", 1, 100), ("B", 2, 50)),
        order(2, "u2", base + 50 * MINUTE, ("A", 2, 100)),
        order(3, "u1", base + HOUR + 2 * MINUTE, ("B", 1, 50)),
        order(4, "u3", base + 58 * MINUTE, ("A", 1, 100)),  # out of order, within the grace
        order(5, "u2", base + HOUR + 20 * MINUTE, ("A", 1, 100)),  # closes the first hour
    ]
    second = [
        order(6, "u3", base + 30 * MINUTE, ("A", 5, 100)),  # late for its hour
        order(7, "u1", base + 2 * HOUR + 10 * MINUTE, ("B", 1, 50)),
        order(8, "u1", base + 31 * HOUR, ("A", 1, 100)),  # the first hours expire
    ]
    expected = {
        ("A", base, 4, 400, 3),
        ("B", base, 2, 100, 1),
        ("A", base + HOUR, 1, 100, 1),
        ("B", base + HOUR, 1, 50, 1),
        ("B", base + 2 * HOUR, 1, 50, 1),
    }
    worker = shop.worker("analytics-a", app=ANALYTICS_APP).start().wait_healthy()
    restored = None
    try:
        assert send(first, shop.settings, progress=False).failed == 0
        wait_for("the first hour's finals", lambda: len(finals(shop)) >= 2, timeout=120)
        worker.kill()  # mid-stream: the rest is sent while it is down
        assert send(second, shop.settings, progress=False).failed == 0
        worker = shop.worker("analytics-a", data_dir=worker.data_dir, app=ANALYTICS_APP)
        worker.start().wait_healthy()
        try:
            wait_for("every closed hour's final", lambda: set(finals(shop)) == expected, 180)
        except TimeoutError:
            raise AssertionError(f"finals {finals(shop)}, expected {sorted(expected)}") from None
        # The views: the first hours are past their retention; the hour of order 8 is open.
        status, body = worker.get("/skus/A/sales")
        assert status == 200
        assert [(w["units"], w["orders"], w["final"]) for w in body["windows"]] == [(1, 1, False)]
        status, body = worker.get(f"/users/u1/spend?from={base + 31 * HOUR}")
        assert (status, [w["spent_cents"] for w in body["windows"]]) == (200, [100])
        assert worker.get("/skus/NOPE/sales")[0] == 404
        assert worker.get("/skus/A/sales?from=soon")[0] == 400

        # A worker without its state dir: the windows restored from the changelog alone
        # (tombstones included) close and expire like any.
        worker.stop()
        restored = shop.worker("analytics-b", app=ANALYTICS_APP).start().wait_healthy()
        assert send([order(9, "u2", base + 57 * HOUR, ("C", 1, 7))], shop.settings).failed == 0
        expected.add(("A", base + 31 * HOUR, 1, 100, 1))
        wait_for("the restored hour's final", lambda: set(finals(shop)) == expected, timeout=180)
        wait_for(
            "restored windows expired",
            lambda: (
                restored is not None
                and restored.metric("pipeline_windows_expired_total", table="sku_sales") >= 1
            ),
            timeout=60,
        )
    finally:
        for process in (worker, restored):
            if process is not None:
                process.stop()

    emitted = finals(shop)
    if guarantee == "exactly_once":
        assert sorted(emitted) == sorted(expected)  # each final once
    else:
        assert set(emitted) == expected  # a repeat carries identical content

    sales_topic = f"{analytics.app_id}-sales_by_sku"
    (letter,) = read_topic(shop.settings, f"{sales_topic}.dlq")
    assert dict(letter.headers)[ERROR_CLASS] == b"LateEvent"
    assert letter.key == b"A"
    # Order 6 still counts in 23 of its 24 day windows: nothing of order_created is late.
    assert read_topic(shop.settings, f"{shop.names.order_created}.dlq") == []
    changelog = read_topic(shop.settings, f"{analytics.app_id}-sku_sales-changelog")
    tombstones: list[Any] = [record for record in changelog if record.value is None]
    assert len(tombstones) >= 2 * 5  # the five closed hours, a row and an index entry each
