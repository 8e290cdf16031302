"""What a handful of fed events imply (pipeline.dev.expected), computed by hand."""

from __future__ import annotations

from collections import Counter

from pipeline.dev import expected
from pipeline.dev.loadgen import (
    CONTRACT,
    LoadConfig,
    ShopEvent,
    adjustment,
    generate,
    order,
    registration,
    user_id,
)


def line(sku: str, quantity: int, cents: int = 250) -> dict[str, object]:
    return {"sku": sku, "quantity": quantity, "unit_price_cents": cents}


EVENTS: list[ShopEvent] = [
    registration("u1", 1),
    registration("u2", 2),
    adjustment("A", 10, "restock", 3),
    order("u1", "u1-o1", [line("A", 2), line("B", 1)], 4),  # 750 cents
    order("u1", "u1-o2", [line("A", 3)], 5),  # 750 cents
    order("u2", "u2-o1", [line("B", 4, 100)], 6),  # 400 cents
    adjustment("B", 5, "restock", 7),
    registration("u1", 8),  # registered again
]


def test_user_stats_counts_orders_and_spend_in_order() -> None:
    users = expected.user_stats(EVENTS)
    assert set(users) == {"u1", "u2"}
    assert (users["u1"].order_count, users["u1"].total_spent_cents) == (2, 1500)
    assert users["u1"].order_ids == ["u1-o1", "u1-o2"]
    assert (users["u2"].order_count, users["u2"].order_ids) == (1, ["u2-o1"])


def test_order_counts_are_each_users_running_count_once() -> None:
    assert expected.order_counts(EVENTS) == Counter({("u1", 1): 1, ("u1", 2): 1, ("u2", 1): 1})


def test_stock_deltas_and_levels() -> None:
    assert expected.stock_deltas(EVENTS) == Counter(
        {("A", 10): 1, ("A", -2): 1, ("A", -3): 1, ("B", -1): 1, ("B", -4): 1, ("B", 5): 1}
    )
    assert expected.stock(EVENTS) == {"A": 5, "B": 0}
    assert expected.stock_changes(EVENTS) == 6


def test_a_repeated_change_counts_twice() -> None:
    twice = [adjustment("A", 1, "restock", 1), adjustment("A", 1, "restock", 2)]
    assert expected.stock_deltas(twice) == Counter({("A", 1): 2})
    assert expected.stock(twice) == {"A": 2}


def test_order_lines_points_and_registrations() -> None:
    assert expected.order_lines(EVENTS) == 4
    # Whole units of each order: 7 + 7 for u1, not 1,500 cents // 100.
    assert expected.points(EVENTS) == {"u1": 14, "u2": 4}
    assert expected.registered(EVENTS) == {"u1": "u1@shop.example", "u2": "u2@shop.example"}


def test_a_welcome_per_registration_and_a_confirmation_per_order_at_the_address() -> None:
    u1, u2 = "u1@shop.example", "u2@shop.example"
    assert expected.notifications(EVENTS) == Counter(
        {
            ("u1", "welcome", None, u1): 2,
            ("u2", "welcome", None, u2): 1,
            ("u1", "order_confirmed", "u1-o1", u1): 1,
            ("u1", "order_confirmed", "u1-o2", u1): 1,
            ("u2", "order_confirmed", "u2-o1", u2): 1,
        }
    )


def test_an_order_before_the_registration_is_confirmed_at_the_address_registered_after() -> None:
    early = [order("u3", "u3-o1", [line("A", 1)], 1), registration("u3", 2)]
    assert expected.notifications(early) == Counter(
        {
            ("u3", "welcome", None, "u3@shop.example"): 1,
            ("u3", "order_confirmed", "u3-o1", "u3@shop.example"): 1,
        }
    )


def test_late_registrations_come_after_the_users_first_orders() -> None:
    events = list(generate(LoadConfig(users=20, orders=200, skus=5, late_registration_every=4)))
    first: dict[str, str] = {}
    for event in events:
        if event.stream in (CONTRACT.user_registered, CONTRACT.order_created):
            first.setdefault(event.key, event.stream)
    late = sorted(user for user, stream in first.items() if stream == CONTRACT.order_created)
    assert late == [user_id(index) for index in range(3, 20, 4)]
    assert sorted(expected.ordered_before_registering(events)) == late
    assert set(expected.registered(events)) == {user_id(index) for index in range(20)}


def test_crossings_are_downward_through_the_threshold_from_zero() -> None:
    assert expected.crossings([10, 4, 12, 3, 2], threshold=5) == [4, 3]
    assert expected.crossings([-1], threshold=0) == [-1]  # from 0, at the threshold
    assert expected.crossings([3, 1], threshold=5) == []  # never at or above it
    assert expected.crossed_at([10, 4, 12, 3, 2], threshold=5) == [1, 3]
