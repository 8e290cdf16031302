from __future__ import annotations

from datetime import UTC, datetime

from pipeline.domain.records import (
    low_stock_alert,
    points_view,
    stock_level,
    stock_view,
    user_order_stats,
    user_points,
    user_stats_view,
    welcome_notification,
)
from pipeline.domain.rules import StockRow, UserOrderStats, UserPoints, millis


def test_a_record_is_its_view_plus_the_update_time() -> None:
    stats = UserOrderStats(3, 4_500, "o3")
    assert user_stats_view("u1", stats) == {
        "user_id": "u1",
        "order_count": 3,
        "total_spent_cents": 4_500,
        "last_order_id": "o3",
    }
    assert user_order_stats("u1", stats, 7) == {**user_stats_view("u1", stats), "updated_at": 7}
    assert stock_view("S", StockRow(4)) == {"sku": "S", "available": 4}
    assert stock_level("S", StockRow(4), 7) == {"sku": "S", "available": 4, "updated_at": 7}
    assert points_view("u1", UserPoints(12, "o2")) == {"user_id": "u1", "points": 12}
    assert user_points("u1", UserPoints(12, "o2"), 7) == {
        "user_id": "u1",
        "points": 12,
        "last_order_id": "o2",
        "updated_at": 7,
    }


def test_low_stock_alert() -> None:
    assert low_stock_alert("S", StockRow(9), 10, 7) == {
        "sku": "S",
        "available": 9,
        "threshold": 10,
        "at": 7,
    }


def test_millis_of_a_decoded_timestamp_and_of_an_int() -> None:
    assert millis(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000
    assert millis(123) == 123


def test_welcome_notification() -> None:
    request = welcome_notification({"user_id": "u1", "email": "a@b.example", "name": "A"}, 123)
    assert request == {
        "user_id": "u1",
        "channel": "email",
        "template": "welcome",
        "address": "a@b.example",
        "requested_at": 123,
        "order_id": None,
    }
