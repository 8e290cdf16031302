"""Business rules of the pipeline: pure functions, no I/O, no Faust.

The agents call these with decoded values and write what they return. Each table
row remembers, per source stream partition, the position of the last event it
applied; an event at or before that position is a replay (at-least-once
delivery after a crash) and changes nothing. That is what makes the table
updates exact without Kafka transactions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Position:
    """Where an event came from: a source stream partition, an offset, and an
    index among the several changes one source event makes (the order lines of an
    order that touch the same SKU).
    """

    offset: int
    index: int = 0


# Keyed by ``"<stream>:<partition>"``, e.g. ``"orders:3"`` or ``"adjustments:0"``.
AppliedPositions = Mapping[str, Position]


def source_id(stream: str, partition: int) -> str:
    return f"{stream}:{partition}"


def is_new(applied: AppliedPositions, source: str, position: Position) -> bool:
    """True unless the row already applied this event (or a later one of the same source)."""
    last = applied.get(source)
    return last is None or position > last


def _advance(applied: AppliedPositions, source: str, position: Position) -> dict[str, Position]:
    return {**applied, source: position}


@dataclass(frozen=True)
class UserOrderStats:
    order_count: int = 0
    total_spent_cents: int = 0
    last_order_id: str = ""
    applied: AppliedPositions = field(default_factory=dict)


def apply_order(
    stats: UserOrderStats | None,
    *,
    order_id: str,
    total_cents: int,
    source: str,
    position: Position,
) -> UserOrderStats | None:
    """The user's stats after this order, or None when the order was already applied."""
    current = stats or UserOrderStats()
    if not is_new(current.applied, source, position):
        return None
    return UserOrderStats(
        order_count=current.order_count + 1,
        total_spent_cents=current.total_spent_cents + total_cents,
        last_order_id=order_id,
        applied=_advance(current.applied, source, position),
    )


@dataclass(frozen=True)
class StockRow:
    available: int = 0  # an unknown SKU starts at 0; orders may take it below 0
    applied: AppliedPositions = field(default_factory=dict)


@dataclass(frozen=True)
class StockChange:
    row: StockRow
    # True exactly when this change took ``available`` from at or above the
    # threshold to below it: one alert per crossing, not one per event below it.
    crossed_low_stock: bool


def crosses_low_stock(before: int, after: int, threshold: int) -> bool:
    return before >= threshold > after


def apply_stock_delta(
    row: StockRow | None,
    *,
    delta: int,
    source: str,
    position: Position,
    threshold: int,
) -> StockChange | None:
    """The SKU's stock after adding ``delta`` (negative for an order line or a
    write-off), or None when this change was already applied."""
    current = row or StockRow()
    if not is_new(current.applied, source, position):
        return None
    available = current.available + delta
    return StockChange(
        row=StockRow(available=available, applied=_advance(current.applied, source, position)),
        crossed_low_stock=crosses_low_stock(current.available, available, threshold),
    )


@dataclass(frozen=True)
class OrderLine:
    """One order line re-keyed by SKU, carrying the order's source position so the
    stock table can tell a replayed line from a new one."""

    sku: str
    quantity: int
    order_id: str
    order_partition: int
    order_offset: int
    line_index: int
    # The order's creation time (ms): the stock level's updated_at, so a replayed
    # line yields the same derived event.
    created_at_ms: int


def order_lines_by_sku(
    *,
    order_id: str,
    items: Sequence[Mapping[str, Any]],
    order_partition: int,
    order_offset: int,
    created_at_ms: int,
) -> list[OrderLine]:
    """The order's lines in order, each numbered so replays are recognised per line."""
    return [
        OrderLine(
            sku=str(item["sku"]),
            quantity=int(item["quantity"]),
            order_id=order_id,
            order_partition=order_partition,
            order_offset=order_offset,
            line_index=index,
            created_at_ms=created_at_ms,
        )
        for index, item in enumerate(items)
    ]


def welcome_notification(user: Mapping[str, Any], requested_at: int) -> dict[str, Any]:
    """The notification request for a newly registered user's welcome email."""
    return {
        "user_id": user["user_id"],
        "channel": "email",
        "template": "welcome",
        "address": user["email"],
        "requested_at": requested_at,
    }
