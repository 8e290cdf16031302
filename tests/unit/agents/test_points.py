"""The loyalty-points service through the public test harness (pipeline.streaming.testing)."""

from __future__ import annotations

from pipeline.domain.rules import UserPoints
from pipeline.services import loyalty_points, points_settings
from pipeline.settings import Settings
from pipeline.streaming.testing import ServiceTest
from tests.unit.agents.test_shop import order


def test_a_point_per_whole_currency_unit_of_each_order() -> None:
    service = ServiceTest(loyalty_points(points_settings(Settings(app_id="unit"))))
    service.send("order_created", "u1", order(1, "u1", [("A", 3)]))
    service.send("order_created", "u1", order(2, "u1", [("B", 1)]))
    service.run()
    records = [record for _, record in service.emitted("user_points")]
    assert [(r["points"], r["last_order_id"]) for r in records] == [(3, "u1-o1"), (4, "u1-o2")]
    assert service.row("points", "u1") == UserPoints(4, "u1-o2")
