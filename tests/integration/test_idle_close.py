"""Closing idle partitions by the wall clock on the real stack: with
``PIPELINE_WINDOW_IDLE_CLOSE_MS`` set, a partition that goes quiet after one order has its
hour's final emitted with no later event, once under exactly_once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from pipeline.dev.loadgen import send
from pipeline.dev.workers import ANALYTICS_APP, Deployment, wait_for
from tests.integration.conftest import StackInfo
from tests.integration.test_analytics_service import HOUR, finals, order

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_quiet_partitions_hour_is_final_by_the_wall_clock(
    stack: StackInfo, tmp_path: Path, guarantee: str
) -> None:
    shop = Deployment(
        name=f"it-idle-{uuid.uuid4().hex[:8]}",
        root=tmp_path,
        base_env=stack.env,
        extra_env={
            "PIPELINE_PROCESSING_GUARANTEE": guarantee,
            "PIPELINE_PARTITIONS": "1",
            "PIPELINE_ANALYTICS_GRACE_MS": "0",
            "PIPELINE_WINDOW_IDLE_CLOSE_MS": "1000",
        },
    )
    # Two seconds of event time before the end of an hour two hours ago: the stream time
    # reaches that end after about two seconds of quiet.
    end = (int(time.time() * 1000) // HOUR - 1) * HOUR
    worker = shop.worker("analytics", app=ANALYTICS_APP).start().wait_healthy()
    try:
        sent = send([order(1, "u1", end - 2_000, ("A", 3, 100))], shop.settings, progress=False)
        assert sent.failed == 0
        wait_for("the hour's final", lambda: bool(finals(shop)), timeout=120)
        assert worker.metric("pipeline_windows_closed_total", table="sku_sales") >= 1
    finally:
        worker.stop()
    expected = ("A", end - HOUR, 3, 300, 1)
    if guarantee == "exactly_once":
        assert finals(shop) == [expected]
    else:
        assert set(finals(shop)) == {expected}
