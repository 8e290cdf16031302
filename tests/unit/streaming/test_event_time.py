"""Event time: read from a record's field or its Kafka timestamp, and carried by every
record an event causes as its Kafka timestamp, through a repartition hop too."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.streaming.event_time import (
    KAFKA_TIMESTAMP,
    EventTime,
    EventTimeMissing,
    iso,
    millis,
)
from pipeline.streaming.ports import Message
from pipeline.streaming.testing import ServiceTest
from pipeline.streaming.topology import Emit, Topology
from pipeline.topics import TopicNames

SETTINGS = Settings(app_id="unit", low_stock_threshold=10)
HOUR = 3_600_000


def message(timestamp: float | None) -> Message:
    return cast(Message, SimpleNamespace(timestamp=timestamp))


def test_the_default_is_the_kafka_timestamp_in_milliseconds() -> None:
    assert KAFKA_TIMESTAMP.of({}, message(1_700_000_000.123)) == 1_700_000_000_123
    with pytest.raises(EventTimeMissing, match="no Kafka timestamp"):
        KAFKA_TIMESTAMP.of({}, message(None))


def test_a_field_is_read_from_a_record_or_an_internal_value() -> None:
    created = datetime(2026, 12, 7, 15, 0, 0, 1000, tzinfo=UTC)
    field = EventTime.field("created_at")
    assert field.of({"created_at": created}, message(0.0)) == 1_796_655_600_001
    assert field.of(SimpleNamespace(created_at=42), message(0.0)) == 42
    later = datetime(2026, 12, 7, 16, 0, tzinfo=timezone(timedelta(hours=1)))
    assert field.of({"created_at": later}, message(0.0)) == 1_796_655_600_000


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({}, "'created_at' is None"),
        ({"created_at": "yesterday"}, "'created_at' is 'yesterday'"),
        ({"created_at": True}, "'created_at' is True"),
        ({"created_at": datetime(2026, 1, 1)}, "naive datetime"),
    ],
)
def test_a_record_without_a_usable_field_is_refused_by_name(value: Any, why: str) -> None:
    with pytest.raises(EventTimeMissing, match=why):
        EventTime.field("created_at").of(value, message(0.0))


def test_milliseconds_read_as_iso_in_messages() -> None:
    assert iso(1_796_655_600_001) == "2026-12-07T15:00:00.001Z"
    assert millis(1_796_655_600_001) == 1_796_655_600_001


def order(number: int, created_at: int) -> dict[str, Any]:
    return {
        "order_id": f"o{number}",
        "user_id": "u1",
        "items": [{"sku": "A", "quantity": 1, "unit_price_cents": 100}],
        "total_cents": 100,
        "created_at": created_at,
    }


def test_derived_records_carry_the_kafka_timestamp_of_their_event_through_the_hop() -> None:
    service = ServiceTest(shop(SETTINGS))
    service.send("order_created", "u1", order(1, 5), timestamp=1_000 * HOUR)
    service.send("order_created", "u1", order(2, 6), timestamp=1_001 * HOUR)
    service.run()
    assert service.timestamps("user_order_stats") == [1_000 * HOUR, 1_001 * HOUR]
    assert service.timestamps("unit-order_lines_by_sku") == [1_000 * HOUR, 1_001 * HOUR]
    # The stock agent reads the re-keyed lines' Kafka timestamps: the orders' event time.
    assert service.timestamps("stock_levels") == [1_000 * HOUR, 1_001 * HOUR]


def confirmations(event_time: EventTime) -> Topology:
    topology = Topology(SETTINGS)
    topics = TopicNames.from_settings(SETTINGS)
    agent = topology.agent("confirm", emits=[topics.notifications], event_time=event_time)

    @agent.on(topics.order_created)
    def confirm(user_id: str, order: dict[str, Any]) -> Sequence[Emit]:
        record = {
            "user_id": user_id,
            "channel": "email",
            "template": "welcome",
            "address": "a@example.com",
            "requested_at": order["created_at"],
        }
        return [Emit(topics.notifications, user_id, record)]

    return topology


def test_an_agent_reading_a_field_stamps_what_it_emits_with_it() -> None:
    service = ServiceTest(confirmations(EventTime.field("created_at")))
    service.send("order_created", "u1", order(1, 7 * HOUR), timestamp=99 * HOUR)
    service.run()
    assert service.timestamps("notifications") == [7 * HOUR]


def test_an_event_without_its_event_time_is_dead_lettered_with_its_bytes() -> None:
    service = ServiceTest(confirmations(EventTime.field("no_such_field")))
    sent = service.send("order_created", "u1", order(1, 7 * HOUR))
    service.run()
    assert service.emitted("notifications") == []
    (letter,) = service.dead_letters("order_created")
    assert letter.error == "EventTimeMissing" and "'no_such_field' is None" in letter.reason
    assert letter.value == service.topics.logs[("order_created", sent.partition)][0].value
