"""Windowed tables through the public harness: order lines re-keyed by SKU (their event
time, the order's created_at, carried as the Kafka timestamp), summed per SKU and hour of
event time; lateness, closing, finals, replays and retention."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from pipeline.settings import Settings
from pipeline.streaming.event_time import EventTime
from pipeline.streaming.testing import ServiceTest
from pipeline.streaming.topology import Emit, Rekeyed, TableSpec, Topology
from pipeline.streaming.windowing import Hopping, Tumbling, Window, clock_key
from pipeline.streaming.windows import CloseFailed
from pipeline.topics import TopicNames

HOUR = 3_600_000
MINUTE = 60_000
T0 = 500_000 * HOUR  # an hour boundary (2027-01-15T08:00Z)
SETTINGS = Settings(app_id="unit", partitions=1)
TOPICS = TopicNames.from_settings(SETTINGS)


@dataclass(frozen=True)
class Sales:
    units: int = 0
    revenue_cents: int = 0
    orders: int = 0


SALES = TableSpec(
    "sku_sales",
    lambda row: struct.pack(">qqq", row.units, row.revenue_cents, row.orders),
    lambda data: Sales(*struct.unpack(">qqq", data)),
    help="Sales per SKU and hour.",
)


@dataclass(frozen=True)
class Line:
    quantity: int
    unit_price_cents: int


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms)


def sales_service(
    windows: Hopping | None = None, close: bool = True, settings: Settings = SETTINGS
) -> Topology:
    topology = Topology(settings)
    lines = topology.repartition(
        "analytics_lines",
        lambda line: json.dumps([line.quantity, line.unit_price_cents]).encode(),
        lambda sku, data: Line(*json.loads(data)),
    )
    rekey = topology.agent("lines", emits=[lines.name], event_time=EventTime.field("created_at"))

    @rekey.on(TOPICS.order_created)
    def order(user_id: str, order: dict[str, Any]) -> Sequence[Rekeyed[Line]]:
        return [
            lines.emit(item["sku"], Line(item["quantity"], item["unit_price_cents"]))
            for item in order["items"]
        ]

    sales = topology.windowed(
        "sku_sales",
        table=SALES,
        windows=windows or Tumbling(size_ms=HOUR, grace_ms=5 * MINUTE, retention_ms=3 * HOUR),
        emits=[TOPICS.sku_sales_hourly],
    )

    @sales.on(lines.name)
    def line(sku: str, line: Line, window: Window, row: Sales | None) -> Sales:
        row = row or Sales()
        revenue = line.quantity * line.unit_price_cents
        return Sales(row.units + line.quantity, row.revenue_cents + revenue, row.orders + 1)

    if close:

        @sales.on_close
        def final(sku: str, window: Window, row: Sales) -> Sequence[Emit]:
            record = {
                "sku": sku,
                "window_start": window.start,
                "window_end": window.end,
                "units": row.units,
                "revenue_cents": row.revenue_cents,
                "orders": row.orders,
            }
            return [Emit(TOPICS.sku_sales_hourly, sku, record)]

    return topology


ORDERS = 0


def send(service: ServiceTest, created_at: int, *items: tuple[str, int]) -> None:
    global ORDERS
    ORDERS += 1
    service.send(
        TOPICS.order_created,
        "u1",
        {
            "order_id": f"o{ORDERS}",
            "user_id": "u1",
            "items": [
                {"sku": sku, "quantity": quantity, "unit_price_cents": 100}
                for sku, quantity in items
            ],
            "total_cents": 100 * sum(quantity for _, quantity in items),
            "created_at": created_at,
        },
    )


def final(sku: str, start: int, units: int, orders: int) -> tuple[str, dict[str, Any]]:
    return (
        sku,
        {
            "sku": sku,
            "window_start": at(start),
            "window_end": at(start + HOUR),
            "units": units,
            "revenue_cents": 100 * units,
            "orders": orders,
        },
    )


def test_out_of_order_events_within_the_grace_count_and_the_final_comes_once_closed() -> None:
    service = ServiceTest(sales_service())
    send(service, T0 + 10 * MINUTE, ("A", 1))
    send(service, T0 + HOUR + 2 * MINUTE, ("A", 2))  # stream time past the first hour
    send(service, T0 + 59 * MINUTE, ("A", 4))  # out of order, within the 5 min grace
    service.run()
    assert service.emitted(TOPICS.sku_sales_hourly) == []
    assert [(w.window.start, w.row, w.final) for w in service.windows("sku_sales", "A")] == [
        (T0, Sales(5, 500, 2), False),
        (T0 + HOUR, Sales(2, 200, 1), False),
    ]

    send(service, T0 + HOUR + 5 * MINUTE, ("B", 1))  # stream time reaches end + grace
    service.run()
    assert service.emitted(TOPICS.sku_sales_hourly) == [final("A", T0, 5, 2)]
    assert service.timestamps(TOPICS.sku_sales_hourly) == [T0 + HOUR - 1]
    assert [w.final for w in service.windows("sku_sales", "A")] == [True, False]
    assert service.metric("pipeline_windows_closed_total", table="sku_sales") == 1

    send(service, T0 + 3 * HOUR, ("B", 1))
    service.run()
    assert service.emitted(TOPICS.sku_sales_hourly)[1:] == [
        final("A", T0 + HOUR, 2, 1),
        final("B", T0 + HOUR, 1, 1),
    ]


def test_an_event_late_for_its_window_is_dead_lettered_with_its_bytes_and_counted() -> None:
    service = ServiceTest(sales_service())
    send(service, T0 + 10 * MINUTE, ("A", 1))
    send(service, T0 + HOUR + 7 * MINUTE, ("A", 1))
    send(service, T0 + 30 * MINUTE, ("A", 3))  # its hour closed at T0 + 1h05
    service.run()
    assert service.emitted(TOPICS.sku_sales_hourly) == [final("A", T0, 1, 1)]
    (letter,) = service.dead_letters("unit-analytics_lines")
    assert letter.error == "LateEvent"
    assert letter.reason == (
        "late for every window of key 'A': event time 2027-01-15T08:30:00.000Z is 2220000 ms "
        "behind the partition's stream time 2027-01-15T09:07:00.000Z; its last window "
        "[2027-01-15T08:00:00.000Z, 2027-01-15T09:00:00.000Z) closed at stream time "
        "2027-01-15T09:05:00.000Z (its end + a grace of 300000 ms), 120000 ms before"
    )
    (late_line,) = [r for r in service.topics.records("unit-analytics_lines") if r.offset == 2]
    assert letter.value == late_line.value
    labels = {"table": "sku_sales", "topic": "unit-analytics_lines"}
    assert service.metric("pipeline_late_events_total", **labels) == 1
    assert service.windows("sku_sales", "A")[0].row == Sales(1, 100, 1)


def test_a_hopping_event_counts_in_its_open_windows_and_its_misses_are_counted() -> None:
    service = ServiceTest(
        sales_service(Hopping(size_ms=3 * HOUR, step_ms=HOUR, retention_ms=10 * HOUR), False)
    )
    send(service, T0 + 5 * HOUR, ("A", 1))  # windows starting at T0+3h, +4h, +5h
    send(service, T0 + 3 * HOUR + 30 * MINUTE, ("A", 2))  # T0+1h, +2h closed; T0+3h open
    send(service, T0 + 30 * MINUTE, ("A", 4))  # every window closed: late
    service.run()
    assert [(w.window.start, w.row.units) for w in service.windows("sku_sales", "A")] == [
        (T0 + 3 * HOUR, 3),
        (T0 + 4 * HOUR, 1),
        (T0 + 5 * HOUR, 1),
    ]
    labels = {"table": "sku_sales", "topic": "unit-analytics_lines"}
    assert service.metric("pipeline_late_window_misses_total", **labels) == 2
    assert service.metric("pipeline_late_events_total", **labels) == 1
    assert len(service.dead_letters("unit-analytics_lines")) == 1


def test_a_replay_counts_nothing_twice_and_emits_no_final_again() -> None:
    service = ServiceTest(sales_service())
    send(service, T0 + 10 * MINUTE, ("A", 1), ("B", 2))
    send(service, T0 + 2 * HOUR, ("A", 1))
    service.run()
    before = (service.windows("sku_sales", "A"), service.emitted(TOPICS.sku_sales_hourly))
    service.rewind(TOPICS.order_created)  # the lines are re-keyed again, with their origin
    service.rewind("unit-analytics_lines")
    service.run()
    assert (service.windows("sku_sales", "A"), service.emitted(TOPICS.sku_sales_hourly)) == before
    assert service.replays_skipped("sku_sales") == 3 + 3  # each line, read twice more


def test_windows_written_before_their_clock_are_not_counted_twice_and_finals_repeat_alike() -> None:
    """At-least-once: a crash after a batch's window rows reached the changelog but not
    its partition clock. The replay finds the rows' own positions; the windows close again,
    with the same content."""
    service = ServiceTest(sales_service())
    send(service, T0 + 10 * MINUTE, ("A", 1))
    send(service, T0 + 2 * HOUR, ("A", 1))
    service.run()
    finals = service.emitted(TOPICS.sku_sales_hourly)
    assert finals == [final("A", T0, 1, 1)]
    changelog = service.topics.logs["unit-sku_sales-changelog", 0]
    changelog[:] = [record for record in changelog if record.key != clock_key(0)]
    restarted = service.restarted()
    restarted.rewind("unit-analytics_lines")
    restarted.run()
    assert [w.row for w in restarted.windows("sku_sales", "A")] == [Sales(1, 100, 1)] * 2
    assert restarted.emitted(TOPICS.sku_sales_hourly) == finals * 2


def test_windows_past_their_retention_are_deleted_with_tombstones_restored_ones_too() -> None:
    service = ServiceTest(sales_service())
    for hour in range(3):
        send(service, T0 + hour * HOUR, ("A", 1), (f"sku-{hour}", 1))
    service.run()
    assert len(service.windows("sku_sales", "A")) == 3

    restarted = service.restarted()  # its store rebuilt from the changelog alone
    assert restarted.stores["sku_sales"].rows() == service.stores["sku_sales"].rows()
    send(restarted, T0 + 4 * HOUR, ("A", 1))  # retention 3 h: the windows of T0, T0+1h go
    restarted.run()
    starts = [w.window.start for w in restarted.windows("sku_sales", "A")]
    assert starts == [T0 + 2 * HOUR, T0 + 4 * HOUR]
    assert restarted.windows("sku_sales", "sku-0") == []
    assert restarted.metric("pipeline_windows_expired_total", table="sku_sales") == 4
    changelog = restarted.topics.records("unit-sku_sales-changelog")
    assert len([record for record in changelog if record.value is None]) == 2 * 4
    # A worker restoring from the changelog now gets the same rows: the tombstones delete.
    assert restarted.restarted().stores["sku_sales"].rows() == restarted.stores["sku_sales"].rows()


def test_the_store_stays_flat_over_weeks_of_event_time() -> None:
    service = ServiceTest(sales_service())
    sizes = []
    for hour in range(24 * 21):
        send(service, T0 + hour * HOUR + 30 * MINUTE, ("A", 1), (f"sku-{hour % 50}", 2))
        service.run()
        sizes.append(len(service.stored_keys("sku_sales")))
    # Three hours retained, two SKUs an hour, a row and an index entry each, one clock.
    assert max(sizes[24:]) == min(sizes[24:]) <= 3 * 2 * 2 + 1
    assert len(service.emitted(TOPICS.sku_sales_hourly)) == 2 * (24 * 21 - 1)


def test_a_close_hook_that_raises_stops_the_agent() -> None:
    topology = sales_service()
    agent = next(agent for agent in topology.agents if agent.name == "sku_sales")

    def broken(sku: str, window: Window, row: Sales) -> Sequence[Emit]:
        raise KeyError("units")

    agent.close_hook = broken  # type: ignore[attr-defined]
    service = ServiceTest(topology)
    send(service, T0, ("A", 1))
    send(service, T0 + 2 * HOUR, ("A", 1))
    with pytest.raises(CloseFailed, match=r"could not close window \[2027-01-15T08:00"):
        service.run()


def test_windows_are_declared_with_a_retention_that_covers_size_and_grace() -> None:
    with pytest.raises(ValueError, match="at least size \\+ grace"):
        Tumbling(size_ms=HOUR, grace_ms=MINUTE, retention_ms=HOUR)
    with pytest.raises(ValueError, match="at most the size"):
        Hopping(size_ms=HOUR, step_ms=2 * HOUR)
    topology = sales_service()
    windowed = topology.windowed(
        "spend", table=SALES, windows=Tumbling(size_ms=HOUR), emits=["unit-analytics_lines"]
    )
    windowed.on(TOPICS.user_registered)(lambda key, value, window, row: Sales())
    with pytest.raises(ValueError, match="a window's final cannot be re-keyed"):
        topology.check()
