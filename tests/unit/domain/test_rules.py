from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.rules import (
    Position,
    StockRow,
    UserOrderStats,
    apply_order,
    apply_stock_delta,
    crosses_low_stock,
    order_lines_by_sku,
    source_id,
    welcome_notification,
)

ORDERS_P0 = source_id("orders", 0)


def test_first_order_creates_stats() -> None:
    stats = apply_order(
        None, order_id="o1", total_cents=250, source=ORDERS_P0, position=Position(5)
    )
    assert stats == UserOrderStats(
        order_count=1, total_spent_cents=250, last_order_id="o1", applied={ORDERS_P0: Position(5)}
    )


def test_replayed_order_is_skipped() -> None:
    stats = apply_order(
        None, order_id="o1", total_cents=250, source=ORDERS_P0, position=Position(5)
    )
    assert (
        apply_order(stats, order_id="o1", total_cents=250, source=ORDERS_P0, position=Position(5))
        is None
    )
    assert (
        apply_order(stats, order_id="o0", total_cents=9, source=ORDERS_P0, position=Position(4))
        is None
    )


def test_other_source_partition_is_tracked_separately() -> None:
    stats = apply_order(None, order_id="o1", total_cents=1, source=ORDERS_P0, position=Position(50))
    after = apply_order(
        stats, order_id="o2", total_cents=2, source=source_id("orders", 1), position=Position(3)
    )
    assert after is not None
    assert (after.order_count, after.total_spent_cents, after.last_order_id) == (2, 3, "o2")


@given(
    totals=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30),
    replay_from=st.integers(min_value=0, max_value=29),
)
def test_replaying_a_suffix_changes_nothing(totals: list[int], replay_from: int) -> None:
    """At-least-once: after a crash the tail of the partition is delivered again."""
    stats: UserOrderStats | None = None
    delivered = list(enumerate(totals))
    delivered += delivered[min(replay_from, len(totals) - 1) :]
    for offset, total in delivered:
        stats = (
            apply_order(
                stats,
                order_id=f"o{offset}",
                total_cents=total,
                source=ORDERS_P0,
                position=Position(offset),
            )
            or stats
        )
    assert stats is not None
    assert stats.order_count == len(totals)
    assert stats.total_spent_cents == sum(totals)
    assert stats.last_order_id == f"o{len(totals) - 1}"


def test_low_stock_crossing_is_downward_only() -> None:
    assert crosses_low_stock(10, 9, 10)
    assert crosses_low_stock(100, -5, 10)
    assert not crosses_low_stock(9, 8, 10)  # already below: no second alert
    assert not crosses_low_stock(5, 20, 10)  # upward
    assert not crosses_low_stock(11, 10, 10)  # at the threshold is not below it


def test_stock_alert_fires_once_per_crossing() -> None:
    source = source_id("adjustments", 0)
    row: StockRow | None = None
    alerts = []
    for offset, delta in enumerate([15, -3, -4, -1, -1, 20, -30]):
        change = apply_stock_delta(
            row, delta=delta, source=source, position=Position(offset), threshold=10
        )
        assert change is not None
        row = change.row
        alerts.append(change.crossed_low_stock)
    # 15 -> 12 -> 8 (cross) -> 7 -> 6 -> 26 -> -4 (cross again)
    assert alerts == [False, False, True, False, False, False, True]
    assert row is not None and row.available == -4


def test_unknown_sku_starts_at_zero_and_may_go_negative() -> None:
    change = apply_stock_delta(
        None, delta=-3, source=source_id("orders", 2), position=Position(7, 1), threshold=10
    )
    assert change is not None
    assert change.row.available == -3
    assert not change.crossed_low_stock


def test_line_of_same_order_is_new_but_replayed_line_is_not() -> None:
    source = source_id("orders", 2)
    first = apply_stock_delta(None, delta=-1, source=source, position=Position(7, 0), threshold=0)
    assert first is not None
    second = apply_stock_delta(
        first.row, delta=-2, source=source, position=Position(7, 1), threshold=0
    )
    assert second is not None and second.row.available == -3
    assert (
        apply_stock_delta(second.row, delta=-1, source=source, position=Position(7, 0), threshold=0)
        is None
    )


def test_order_lines_are_numbered_in_order() -> None:
    lines = order_lines_by_sku(
        order_id="o9",
        items=[
            {"sku": "A", "quantity": 2, "unit_price_cents": 100},
            {"sku": "B", "quantity": 1, "unit_price_cents": 5},
        ],
        order_partition=3,
        order_offset=42,
        created_at_ms=1700000000000,
    )
    assert [(line.sku, line.quantity, line.line_index) for line in lines] == [
        ("A", 2, 0),
        ("B", 1, 1),
    ]
    assert {
        (line.order_partition, line.order_offset, line.order_id, line.created_at_ms)
        for line in lines
    } == {(3, 42, "o9", 1700000000000)}


def test_welcome_notification() -> None:
    request = welcome_notification({"user_id": "u1", "email": "a@b.example", "name": "A"}, 123)
    assert request == {
        "user_id": "u1",
        "channel": "email",
        "template": "welcome",
        "address": "a@b.example",
        "requested_at": 123,
    }
