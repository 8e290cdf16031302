"""The records the shop emits and the answers its views give, built from domain values.

A derived record and the view of the same row share their fields here, so the
topic and the HTTP answer never drift apart.
"""

from __future__ import annotations

from typing import Any

from pipeline.domain.rules import Order, StockRow, UserAddress, UserOrderStats, UserPoints, millis


def user_stats_view(user_id: str, stats: UserOrderStats) -> dict[str, Any]:
    """``GET /users/{user_id}/orders``."""
    return {
        "user_id": user_id,
        "order_count": stats.order_count,
        "total_spent_cents": stats.total_spent_cents,
        "last_order_id": stats.last_order_id,
    }


def user_order_stats(user_id: str, stats: UserOrderStats, updated_at_ms: int) -> dict[str, Any]:
    """``shop.UserOrderStats``."""
    return {**user_stats_view(user_id, stats), "updated_at": updated_at_ms}


def stock_view(sku: str, row: StockRow) -> dict[str, Any]:
    """``GET /stock/{sku}``."""
    return {"sku": sku, "available": row.available}


def stock_level(sku: str, row: StockRow, updated_at_ms: int) -> dict[str, Any]:
    """``shop.StockLevel``."""
    return {**stock_view(sku, row), "updated_at": updated_at_ms}


def low_stock_alert(sku: str, row: StockRow, threshold: int, at_ms: int) -> dict[str, Any]:
    """``shop.LowStockAlert``."""
    return {"sku": sku, "available": row.available, "threshold": threshold, "at": at_ms}


def welcome_notification(user: dict[str, Any], requested_at_ms: int) -> dict[str, Any]:
    """``shop.NotificationRequested``: the welcome email for a newly registered user."""
    return {
        "user_id": user["user_id"],
        "channel": "email",
        "template": "welcome",
        "address": user["email"],
        "requested_at": requested_at_ms,
        "order_id": None,
    }


def order_confirmation(user_id: str, order: Order, address: UserAddress) -> dict[str, Any]:
    """``shop.NotificationRequested``: the confirmation email of an order, at the user's
    address, requested at the order's creation."""
    return {
        "user_id": user_id,
        "channel": "email",
        "template": "order_confirmed",
        "address": address.email,
        "requested_at": millis(order["created_at"]),
        "order_id": order["order_id"],
    }


def points_view(user_id: str, points: UserPoints) -> dict[str, Any]:
    """``GET /users/{user_id}/points``."""
    return {"user_id": user_id, "points": points.points}


def user_points(user_id: str, points: UserPoints, updated_at_ms: int) -> dict[str, Any]:
    """``shop.UserPoints``."""
    return {
        **points_view(user_id, points),
        "last_order_id": points.last_order_id,
        "updated_at": updated_at_ms,
    }
