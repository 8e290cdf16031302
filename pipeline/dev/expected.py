"""What the pipeline must produce, computed straight from the events that were fed.

For the demo's checks and the integration tests (pipeline.dev.audit tallies the derived
topics against it). Deliberately written without pipeline.domain.rules: a second, plain
implementation of what the agents compute, so a rule that goes wrong does not also bend
what it is checked against.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.dev.loadgen import CONTRACT, ShopEvent


@dataclass
class ExpectedUser:
    order_count: int = 0
    total_spent_cents: int = 0
    order_ids: list[str] = field(default_factory=list)


def user_stats(events: Iterable[ShopEvent]) -> dict[str, ExpectedUser]:
    """user_id → orders, total spent and order ids (in the order they were sent)."""
    users: dict[str, ExpectedUser] = {}
    for event in events:
        if event.stream != CONTRACT.order_created:
            continue
        user = users.setdefault(event.key, ExpectedUser())
        user.order_count += 1
        user.total_spent_cents += event.record["total_cents"]
        user.order_ids.append(event.record["order_id"])
    return users


def stock_deltas(events: Iterable[ShopEvent]) -> Counter[tuple[str, int]]:
    """(sku, change) of every change to a SKU's stock, counted: each adjustment adds its
    delta, each order line takes its quantity."""
    deltas: Counter[tuple[str, int]] = Counter()
    for event in events:
        if event.stream == CONTRACT.stock_adjusted:
            deltas[(event.key, event.record["delta"])] += 1
        elif event.stream == CONTRACT.order_created:
            for item in event.record["items"]:
                deltas[(item["sku"], -item["quantity"])] += 1
    return deltas


def stock(events: Iterable[ShopEvent]) -> dict[str, int]:
    """sku → units available: the sum of its changes, from 0."""
    available: dict[str, int] = defaultdict(int)
    for (sku, delta), times in stock_deltas(events).items():
        available[sku] += delta * times
    return dict(available)


def stock_changes(events: Iterable[ShopEvent]) -> int:
    """Each adjustment and each order line changes one SKU's stock once."""
    return sum(stock_deltas(events).values())


def order_lines(events: Iterable[ShopEvent]) -> int:
    """Order lines of every order: one re-keyed record each (order_lines_by_sku)."""
    return sum(
        len(event.record["items"]) for event in events if event.stream == CONTRACT.order_created
    )


def order_counts(events: Iterable[ShopEvent]) -> Counter[tuple[str, int]]:
    """(user_id, running order count) of every order: 1..n once each for a user's n orders,
    one user_order_stats record each."""
    return Counter(
        (user_id, count)
        for user_id, user in user_stats(events).items()
        for count in range(1, user.order_count + 1)
    )


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


# (user_id, template, order_id, address) of a notification request.
Notification = tuple[str, str, str | None, str]


def notifications(events: Iterable[ShopEvent]) -> Counter[Notification]:
    """Every notification: a welcome per registration, and a confirmation per order at the
    email of the user's latest registration sent before it, or, for an order sent before
    any, of the first one sent after it (the order waits for it)."""
    wanted: Counter[Notification] = Counter()
    email: dict[str, str] = {}
    waiting: dict[str, list[str]] = defaultdict(list)
    for event in events:
        if event.stream == CONTRACT.user_registered:
            email[event.key] = event.record["email"]
            wanted[(event.key, "welcome", None, email[event.key])] += 1
            for order_id in waiting.pop(event.key, []):
                wanted[(event.key, "order_confirmed", order_id, email[event.key])] += 1
        elif event.stream == CONTRACT.order_created:
            if event.key in email:
                confirmed = (
                    event.key,
                    "order_confirmed",
                    event.record["order_id"],
                    email[event.key],
                )
                wanted[confirmed] += 1
            else:
                waiting[event.key].append(event.record["order_id"])
    return wanted


def units_by_sku(events: Iterable[ShopEvent]) -> dict[str, int]:
    """sku → units ordered, over every order line."""
    units: dict[str, int] = defaultdict(int)
    for event in events:
        if event.stream == CONTRACT.order_created:
            for item in event.record["items"]:
                units[item["sku"]] += item["quantity"]
    return dict(units)


def ordered_before_registering(events: Iterable[ShopEvent]) -> Counter[str]:
    """user_id → orders sent before the user's first registration (held by the join)."""
    early: Counter[str] = Counter()
    registered: set[str] = set()
    for event in events:
        if event.stream == CONTRACT.user_registered:
            registered.add(event.key)
        elif event.stream == CONTRACT.order_created and event.key not in registered:
            early[event.key] += 1
    return early


def crossings(levels: Sequence[int], threshold: int) -> list[int]:
    """The levels at which stock fell from at or above ``threshold`` to below it."""
    return [levels[index] for index in crossed_at(levels, threshold)]


def crossed_at(levels: Sequence[int], threshold: int) -> list[int]:
    """The indices of ``crossings`` in ``levels``."""
    found = []
    previous = 0  # an unknown SKU starts at 0
    for index, level in enumerate(levels):
        if previous >= threshold > level:
            found.append(index)
        previous = level
    return found
