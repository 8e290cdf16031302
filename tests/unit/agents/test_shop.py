"""The shop's agents through the public test harness (pipeline.streaming.testing): Avro
records in, the runtime's own path, rows, derived records and dead letters out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline.domain.rules import StockRow, UserOrderStats
from pipeline.serde.codec import frame
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.testing import ServiceTest

SETTINGS = Settings(app_id="unit", low_stock_threshold=10)


def at(millis: int) -> datetime:
    """A timestamp-millis field as the Avro decoder gives it."""
    return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=millis)


def order(number: int, user: str, items: list[tuple[str, int]]) -> dict[str, Any]:
    return {
        "order_id": f"{user}-o{number}",
        "user_id": user,
        "items": [{"sku": sku, "quantity": qty, "unit_price_cents": 100} for sku, qty in items],
        "total_cents": 100 * sum(qty for _, qty in items),
        "created_at": 1_700_000_000_000 + number,
    }


def adjustment(delta: int, at: int) -> dict[str, Any]:
    return {"sku": "A", "delta": delta, "reason": "restock", "adjusted_at": at}


def test_an_order_updates_the_user_row_emits_the_stats_and_takes_its_lines_from_stock() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("stock_adjusted", "A", adjustment(20, 1))
    service.send("order_created", "u1", order(7, "u1", [("A", 2), ("B", 1)]))
    service.run()
    assert service.row("user_order_stats", "u1") == UserOrderStats(1, 300, "u1-o7")
    assert service.emitted("user_order_stats") == [
        (
            "u1",
            {
                "user_id": "u1",
                "order_count": 1,
                "total_spent_cents": 300,
                "last_order_id": "u1-o7",
                "updated_at": at(1_700_000_000_007),
            },
        )
    ]
    assert (service.row("stock", "A"), service.row("stock", "B")) == (StockRow(18), StockRow(-1))
    assert sorted(line.sku for _, line in service.emitted("unit-order_lines_by_sku")) == ["A", "B"]


def test_a_replay_changes_no_row_and_emits_nothing_again() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", [("A", 2)]))
    service.send("order_created", "u1", order(2, "u1", [("A", 5)]))
    service.run()
    emitted = (service.emitted("user_order_stats"), service.emitted("stock_levels"))

    service.rewind("order_created")
    service.rewind("unit-order_lines_by_sku")
    service.run()

    assert service.row("user_order_stats", "u1") == UserOrderStats(2, 700, "u1-o2")
    assert service.row("stock", "A") == StockRow(-7)
    assert (service.emitted("user_order_stats"), service.emitted("stock_levels")) == emitted
    assert service.replays_skipped("user_order_stats") == 2
    assert service.replays_skipped("stock") == 2


def test_an_adjustment_crossing_the_threshold_raises_one_alert() -> None:
    service = ServiceTest(shop(SETTINGS))
    for delta, moment in [(12, 0), (-3, 1), (-1, 2)]:
        service.send("stock_adjusted", "A", adjustment(delta, moment))
    service.run()
    assert service.emitted("low_stock_alerts") == [
        ("A", {"sku": "A", "available": 9, "threshold": 10, "at": at(1)})
    ]
    assert service.row("stock", "A") == StockRow(8)


def test_a_registration_requests_the_welcome_email() -> None:
    service = ServiceTest(shop(SETTINGS))
    user = {"user_id": "u1", "email": "u1@shop.example", "name": "U", "registered_at": 5}
    service.send("user_registered", "u1", user)
    service.run()
    ((key, notification),) = service.emitted("notifications")
    assert (key, notification["address"], notification["channel"]) == (
        "u1",
        "u1@shop.example",
        "email",
    )


def test_bad_bytes_are_dead_lettered_as_they_came_and_the_others_stand() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("order_created", "u1", order(1, "u1", [("A", 1)]))
    service.send_bytes("order_created", b"u1", b"not avro")
    service.send_bytes("order_created", b"u1", frame(999_001, b"\x02"))
    service.send("order_created", "u1", order(2, "u1", [("B", 1)]))
    service.run()
    letters = service.dead_letters("order_created")
    # Each agent reading the topic dead-letters it: a replay goes back to that agent alone.
    assert {(letter.agent, letter.value, letter.error) for letter in letters} == {
        (agent, value, error)
        for agent in ("orders", "notifications")
        for value, error in [
            (b"not avro", "NotConfluentFraming"),
            (frame(999_001, b"\x02"), "UnknownSchemaId"),
        ]
    }
    assert len(letters) == 4
    assert service.row("user_order_stats", "u1") == UserOrderStats(2, 200, "u1-o2")
