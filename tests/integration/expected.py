"""What the pipeline must produce, computed straight from the input events.

Deliberately written without pipeline.domain.rules: a second, plain implementation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.dev.loadgen import CONTRACT, ShopEvent


@dataclass
class ExpectedUser:
    order_count: int = 0
    total_spent_cents: int = 0
    order_ids: list[str] | None = None


def user_stats(events: Iterable[ShopEvent]) -> dict[str, ExpectedUser]:
    users: dict[str, ExpectedUser] = {}
    for event in events:
        if event.stream != CONTRACT.order_created:
            continue
        user = users.setdefault(event.key, ExpectedUser(order_ids=[]))
        user.order_count += 1
        user.total_spent_cents += event.record["total_cents"]
        assert user.order_ids is not None
        user.order_ids.append(event.record["order_id"])
    return users


def stock(events: Iterable[ShopEvent]) -> dict[str, int]:
    available: dict[str, int] = defaultdict(int)
    for event in events:
        if event.stream == CONTRACT.stock_adjusted:
            available[event.key] += event.record["delta"]
        elif event.stream == CONTRACT.order_created:
            for item in event.record["items"]:
                available[item["sku"]] -= item["quantity"]
    return dict(available)


def stock_changes(events: Iterable[ShopEvent]) -> int:
    """Each adjustment and each order line changes one SKU's stock once."""
    count = 0
    for event in events:
        if event.stream == CONTRACT.stock_adjusted:
            count += 1
        elif event.stream == CONTRACT.order_created:
            count += len(event.record["items"])
    return count


def points(events: Iterable[ShopEvent]) -> dict[str, int]:
    """user_id → loyalty points: one per whole currency unit of each order's total."""
    earned: dict[str, int] = defaultdict(int)
    for event in events:
        if event.stream == CONTRACT.order_created:
            earned[event.key] += event.record["total_cents"] // 100
    return dict(earned)


def registered(events: Iterable[ShopEvent]) -> dict[str, str]:
    """user_id → email of every registration."""
    return {
        event.key: event.record["email"]
        for event in events
        if event.stream == CONTRACT.user_registered
    }


def crossings(levels: Sequence[int], threshold: int) -> list[int]:
    """The levels at which stock fell from at or above ``threshold`` to below it."""
    found = []
    previous = 0  # an unknown SKU starts at 0
    for level in levels:
        if previous >= threshold > level:
            found.append(level)
        previous = level
    return found
