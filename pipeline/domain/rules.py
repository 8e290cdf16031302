"""Business rules of the shop: pure functions, no I/O, no Faust.

The agents call these with decoded values and keep what they return. Replays are
not their concern: the runtime applies each source event to a row at most once
(pipeline.streaming.positions).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UserOrderStats:
    order_count: int = 0
    total_spent_cents: int = 0
    last_order_id: str = ""


# A decoded shop.OrderCreated record.
Order = Mapping[str, Any]


def apply_order(stats: UserOrderStats | None, order: Order) -> UserOrderStats:
    """The user's stats after this order."""
    current = stats or UserOrderStats()
    return UserOrderStats(
        order_count=current.order_count + 1,
        total_spent_cents=current.total_spent_cents + order["total_cents"],
        last_order_id=order["order_id"],
    )


@dataclass(frozen=True)
class StockRow:
    available: int = 0  # an unknown SKU starts at 0; orders may take it below 0


@dataclass(frozen=True)
class StockChange:
    row: StockRow
    # True exactly when this change took ``available`` from at or above the
    # threshold to below it: one alert per crossing, not one per event below it.
    crossed_low_stock: bool


def crosses_low_stock(before: int, after: int, threshold: int) -> bool:
    """Stock is low when ``available < threshold``; this is the change into low stock."""
    return before >= threshold > after


def apply_stock_delta(row: StockRow | None, *, delta: int, threshold: int) -> StockChange:
    """The SKU's stock after adding ``delta`` (negative for an order line or a write-off)."""
    current = row or StockRow()
    available = current.available + delta
    return StockChange(
        row=StockRow(available=available),
        crossed_low_stock=crosses_low_stock(current.available, available, threshold),
    )


@dataclass(frozen=True)
class OrderLine:
    """One order line, re-keyed by SKU for the stock side."""

    sku: str
    quantity: int
    order_id: str
    # The order's creation time (ms): the stock level's updated_at, so a replayed
    # line yields the same derived event.
    created_at_ms: int


def order_lines(order: Order) -> list[OrderLine]:
    """The order's lines, in order."""
    created_at_ms = millis(order["created_at"])
    return [
        OrderLine(
            sku=str(item["sku"]),
            quantity=int(item["quantity"]),
            order_id=order["order_id"],
            created_at_ms=created_at_ms,
        )
        for item in order["items"]
    ]


@dataclass(frozen=True)
class UserAddress:
    """Where a user is reached: the email of the user's latest registration."""

    email: str


@dataclass(frozen=True)
class UserPoints:
    points: int = 0
    last_order_id: str = ""


def points_for(total_cents: int) -> int:
    """One point per whole currency unit of the order's total."""
    return total_cents // 100


def apply_points(points: UserPoints | None, order: Order) -> UserPoints:
    """The user's points after this order."""
    current = points or UserPoints()
    earned = points_for(order["total_cents"])
    return UserPoints(points=current.points + earned, last_order_id=order["order_id"])


def millis(value: datetime | int) -> int:
    """A timestamp-millis field as decoded (datetime) or as given (int), in ms."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)
