"""The analytics service through the public harness: sales per SKU and hour, and users'
spend over a sliding day, in event time, against values computed from the input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.analytics import (
    Sale,
    SkuSales,
    UserSpend,
    add_spend,
    decode_sale,
    decode_sku_sales,
    decode_user_spend,
    encode_sale,
    encode_sku_sales,
    encode_user_spend,
    merge_spend,
)
from pipeline.domain.encoding import EncodingError
from pipeline.services import analytics_settings, order_analytics
from pipeline.settings import Settings
from pipeline.streaming.testing import ServiceTest

HOUR = 3_600_000
MINUTE = 60_000
T0 = 500_000 * HOUR
# One partition: the stream time of every SKU and user is the whole input's.
SETTINGS = analytics_settings(Settings(app_id="unit", partitions=1))


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms)


def order(number: int, user: str, created_at: int, *items: tuple[str, int, int]) -> dict[str, Any]:
    return {
        "order_id": f"o{number}",
        "user_id": user,
        "items": [
            {"sku": sku, "quantity": quantity, "unit_price_cents": price}
            for sku, quantity, price in items
        ],
        "total_cents": sum(quantity * price for _, quantity, price in items),
        "created_at": created_at,
    }


def test_each_closed_hour_of_a_sku_is_one_final_with_units_revenue_and_orders() -> None:
    service = ServiceTest(order_analytics(SETTINGS))
    # Two lines of A in one order count as one order of A.
    service.send(
        "order_created", "u1", order(1, "u1", T0 + 5 * MINUTE, ("A", 1, 250), ("A", 2, 250))
    )
    service.send(
        "order_created", "u2", order(2, "u2", T0 + 50 * MINUTE, ("A", 1, 300), ("B", 4, 10))
    )
    service.send("order_created", "u1", order(3, "u1", T0 + HOUR + 6 * MINUTE, ("B", 1, 10)))
    service.run()
    assert service.emitted("sku_sales_hourly") == [
        (sku, {"sku": sku, "window_start": at(T0), "window_end": at(T0 + HOUR), **totals})
        for sku, totals in [
            ("A", {"units": 4, "revenue_cents": 1050, "orders": 2}),
            ("B", {"units": 4, "revenue_cents": 40, "orders": 1}),
        ]
    ]
    assert service.timestamps("sku_sales_hourly") == [T0 + HOUR - 1] * 2
    (open_hour,) = [w for w in service.windows("sku_sales", "B") if not w.final]
    assert open_hour.row == SkuSales(1, 10, 1)


def test_a_users_spend_is_kept_in_every_24_hour_window_of_each_order() -> None:
    service = ServiceTest(order_analytics(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", T0 + 30 * MINUTE, ("A", 1, 500)))
    service.send("order_created", "u1", order(2, "u1", T0 + 3 * HOUR, ("A", 2, 100)))
    service.run()
    windows = service.windows("user_spend", "u1")
    spent = {w.window.start: w.row for w in windows}
    assert len(spent) == 24 + 3  # each order in 24 windows, 21 of them shared
    assert spent[T0 - 23 * HOUR] == UserSpend(500, 1)
    assert spent[T0] == UserSpend(700, 2)
    assert spent[T0 + 3 * HOUR] == UserSpend(200, 1)
    assert all(w.window.end - w.window.start == 24 * HOUR for w in windows)


def test_a_late_order_is_dead_lettered_from_both_windowed_agents_and_counted() -> None:
    service = ServiceTest(order_analytics(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", T0 + 30 * HOUR, ("A", 1, 100)))
    late = service.send("order_created", "u1", order(2, "u1", T0, ("A", 1, 100)))
    service.run()
    (spend_letter,) = service.dead_letters("order_created")
    assert spend_letter.error == "LateEvent" and "key 'u1'" in spend_letter.reason
    assert spend_letter.value == service.topics.logs[("order_created", late.partition)][1].value
    (sales_letter,) = service.dead_letters("unit-analytics-sales_by_sku")
    assert "key 'A'" in sales_letter.reason
    for table, topic in [
        ("user_spend", "order_created"),
        ("sku_sales", "unit-analytics-sales_by_sku"),
    ]:
        assert service.metric("pipeline_late_events_total", table=table, topic=topic) == 1
    assert service.windows("sku_sales", "A")[0].row == SkuSales(1, 100, 1)


def test_a_replayed_order_counts_once() -> None:
    service = ServiceTest(order_analytics(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", T0, ("A", 1, 100)))
    service.send("order_created", "u1", order(2, "u1", T0 + 2 * HOUR, ("A", 1, 100)))
    service.run()
    before = (
        service.windows("sku_sales", "A"),
        service.windows("user_spend", "u1"),
        service.emitted("sku_sales_hourly"),
    )
    service.rewind("order_created")
    service.run()
    after = (
        service.windows("sku_sales", "A"),
        service.windows("user_spend", "u1"),
        service.emitted("sku_sales_hourly"),
    )
    assert after == before


def spent(totals: list[int]) -> UserSpend:
    row = None
    for total in totals:
        row = add_spend(row, {"total_cents": total})
    assert row is not None
    return row


@given(st.lists(st.integers(0, 10**9), min_size=3), st.data())
def test_spend_merges_as_its_orders_add_up(totals: list[int], data: st.DataObject) -> None:
    cut = data.draw(st.integers(1, len(totals) - 2))
    again = data.draw(st.integers(cut + 1, len(totals) - 1))
    a, b, c = spent(totals[:cut]), spent(totals[cut:again]), spent(totals[again:])
    assert merge_spend(a, b) == spent(totals[:again])
    assert merge_spend(merge_spend(a, b), c) == merge_spend(a, merge_spend(b, c)) == spent(totals)


def test_rows_and_sales_round_trip_and_bad_bytes_are_refused() -> None:
    assert decode_sale("A", encode_sale(Sale(3, 750))) == Sale(3, 750)
    assert decode_sku_sales(encode_sku_sales(SkuSales(1, 2, 3))) == SkuSales(1, 2, 3)
    assert decode_user_spend(encode_user_spend(UserSpend(9, 2))) == UserSpend(9, 2)
    with pytest.raises(EncodingError, match="SKU sales row"):
        decode_sku_sales(b"\x02")


def test_the_service_has_its_own_group_and_its_windows_settings() -> None:
    settings = analytics_settings(Settings(app_id="shop", analytics_grace_ms=0))
    topology = order_analytics(settings)
    assert settings.app_id == "shop-analytics"
    assert "shop-analytics-sales_by_sku" in topology.internal
    assert [agent.name for agent in topology.agents] == [
        "analytics_sales",
        "sku_sales",
        "user_spend",
    ]
    with pytest.raises(ValueError, match="at least size"):
        order_analytics(analytics_settings(Settings(analytics_retention_ms=HOUR)))
