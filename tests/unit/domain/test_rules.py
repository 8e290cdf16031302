from __future__ import annotations

from collections.abc import Sequence

from pipeline.domain.rules import (
    Order,
    StockRow,
    UserOrderStats,
    UserPoints,
    apply_order,
    apply_points,
    apply_stock_delta,
    crosses_low_stock,
    order_lines,
    points_for,
)


def order(order_id: str, total_cents: int, items: Sequence[tuple[str, int]] = ()) -> Order:
    return {
        "order_id": order_id,
        "total_cents": total_cents,
        "items": [{"sku": sku, "quantity": qty, "unit_price_cents": 100} for sku, qty in items],
        "created_at": 1700000000000,
    }


def test_first_order_creates_stats() -> None:
    assert apply_order(None, order("o1", 250)) == UserOrderStats(1, 250, "o1")


def test_orders_add_up() -> None:
    assert apply_order(UserOrderStats(2, 100, "o2"), order("o3", 5)) == UserOrderStats(3, 105, "o3")


def test_low_stock_crossing_is_downward_only() -> None:
    assert crosses_low_stock(10, 9, 10)
    assert crosses_low_stock(100, -5, 10)
    assert not crosses_low_stock(9, 8, 10)  # already below: no second alert
    assert not crosses_low_stock(5, 20, 10)  # upward
    assert not crosses_low_stock(11, 10, 10)  # at the threshold is not below it


def test_stock_alert_fires_once_per_crossing() -> None:
    row: StockRow | None = None
    alerts = []
    for delta in [15, -3, -4, -1, -1, 20, -30]:
        change = apply_stock_delta(row, delta=delta, threshold=10)
        row = change.row
        alerts.append(change.crossed_low_stock)
    # 15 -> 12 -> 8 (cross) -> 7 -> 6 -> 26 -> -4 (cross again)
    assert alerts == [False, False, True, False, False, False, True]
    assert row is not None and row.available == -4


def test_unknown_sku_starts_at_zero_and_may_go_negative() -> None:
    change = apply_stock_delta(None, delta=-3, threshold=10)
    assert change.row.available == -3
    assert not change.crossed_low_stock


def test_order_lines_keep_the_order_of_the_items() -> None:
    lines = order_lines(order("o9", 205, [("A", 2), ("B", 1)]))
    assert [(line.sku, line.quantity) for line in lines] == [("A", 2), ("B", 1)]
    assert {(line.order_id, line.created_at_ms) for line in lines} == {("o9", 1700000000000)}


def test_a_point_per_whole_currency_unit() -> None:
    assert [points_for(cents) for cents in (0, 99, 100, 199, 12_345)] == [0, 0, 1, 1, 123]


def test_points_add_up_per_order() -> None:
    points = apply_points(None, order("o1", 250))
    assert apply_points(points, order("o2", 1_099)) == UserPoints(12, "o2")
