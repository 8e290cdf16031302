"""The loyalty-points service: its own app and consumer group, added beside a running shop
pipeline that does not change. It catches up from the beginning of order_created, answers
for every user through every worker of its own, and a SIGKILL mid-stream loses and doubles
nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.dev import expected
from pipeline.dev.audit import decoded, read_topic
from pipeline.dev.loadgen import LoadConfig, generate, send
from pipeline.dev.workers import POINTS_APP, wait_for
from pipeline.serde.codec import Codecs
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, points_match, views_match

pytestmark = pytest.mark.integration


def test_the_points_service_catches_up_beside_the_shop_and_survives_a_kill(
    stack: StackInfo, tmp_path: Path
) -> None:
    shop = deployment(stack, f"it-points-{uuid.uuid4().hex[:8]}", tmp_path)
    events = list(generate(LoadConfig(users=30, orders=1_200, skus=10, seed=5)))
    first_half, second_half = events[: len(events) // 2], events[len(events) // 2 :]
    shop_worker = shop.worker("shop").start().wait_healthy()
    points_a = points_b = None
    try:
        assert send(first_half, shop.settings, progress=False).failed == 0
        wait_for("the shop's views", lambda: views_match(shop_worker, first_half), timeout=180)

        # Added later, on its own: it reads order_created from the beginning.
        points_a = shop.worker("points-a", app=POINTS_APP).start().wait_healthy()
        points_b = shop.worker("points-b", app=POINTS_APP).start().wait_healthy()
        for worker in (points_a, points_b):
            wait_for("points caught up", lambda w=worker: points_match(w, first_half), timeout=180)

        # The rest of the stream while both run; one is SIGKILLed part-way and restarted.
        report = send(second_half[: len(second_half) // 2], shop.settings, progress=False)
        points_a.kill()
        report2 = send(second_half[len(second_half) // 2 :], shop.settings, progress=False)
        assert report.failed == report2.failed == 0
        points_a = shop.worker("points-a", data_dir=points_a.data_dir, app=POINTS_APP)
        points_a.start().wait_healthy()
        for worker in (points_a, points_b):
            wait_for("exact points", lambda w=worker: points_match(w, events), timeout=240)
        wait_for("the shop's views", lambda: views_match(shop_worker, events), timeout=180)

        status, body = points_b.get("/users/no-such-user/points")
        assert (status, body["error"]) == (404, "points has no entry for 'no-such-user'")
        # Derived events: at least one per order, and the last for each user is exact.
        codecs = Codecs.from_settings(shop.settings)
        codecs.prepare([shop.names.user_points])
        records = decoded(
            codecs, shop.names.user_points, read_topic(shop.settings, shop.names.user_points)
        )
        orders = sum(user.order_count for user in expected.user_stats(events).values())
        assert len(records) >= orders
        last = {record["user_id"]: record["points"] for record in records}
        assert last == expected.points(events)
        # Nothing dead-lettered by either service.
        assert read_topic(shop.settings, shop.names.dead_letters(shop.names.order_created)) == []
    finally:
        for worker in (points_a, points_b, shop_worker):
            if worker is not None:
                worker.stop()
