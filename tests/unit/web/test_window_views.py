"""The windowed tables' range views, answered by the key's owner from the analytics
service's store (run through the public harness)."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast
from unittest.mock import Mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from pipeline.services import analytics_settings, order_analytics
from pipeline.settings import Settings
from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.testing import ServiceTest
from pipeline.streaming.topology import WindowView
from pipeline.web.views import TableQuery
from pipeline.web.window_views import BadRange, instant, window_range, window_view_handler

HOUR = 3_600_000
T0 = 500_000 * HOUR  # 2027-01-15T08:00Z
SETTINGS = analytics_settings(Settings(app_id="unit", partitions=1))


class Owned:
    """A table partition this worker owns, caught up."""

    changelog_topic = "unit-analytics-sku_sales-changelog"
    own_url = "http://worker-1:6066"
    http_client = Mock()

    def __init__(self, name: str, store: MemoryPartitionStore) -> None:
        self.name = name
        self.store = store

    def partition_for(self, key: bytes) -> int:
        return 0

    def owner_url(self, partition: int) -> str | None:
        return self.own_url

    def settled(self) -> bool:
        return True

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.store.read(partition, key)

    def scan(self, partition: int, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        return list(self.store.scan(partition, start, end))

    def copy_offset(self, partition: int) -> int | None:
        return None


def order(number: int, created_at: int, sku: str) -> dict[str, Any]:
    return {
        "order_id": f"o{number}",
        "user_id": "u1",
        "items": [{"sku": sku, "quantity": 2, "unit_price_cents": 150}],
        "total_cents": 300,
        "created_at": created_at,
    }


@pytest.fixture(scope="module")
def service() -> ServiceTest:
    service = ServiceTest(order_analytics(SETTINGS))
    for number, created_at in enumerate([T0 + 1, T0 + HOUR + 1, T0 + 2 * HOUR + 1, T0 + 3 * HOUR]):
        service.send("order_created", "u1", order(number, created_at, "A"))
    service.run()
    return service


def get(service: ServiceTest, path: str, **match: str) -> tuple[int, Any]:
    name = "sku_sales" if path.startswith("/skus/") else "user_spend"
    view: WindowView[Any] = next(
        v for v in service.topology.window_views if v.agent.row_table.name == name
    )
    assert view.agent.table is not None
    table = Owned(view.agent.table.name, service.stores[view.agent.table.name])
    handler = window_view_handler(TableQuery(table, Mock(), Mock()), view)

    async def answer() -> web.Response:
        return cast(web.Response, await handler(make_mocked_request("GET", path, match_info=match)))

    response = asyncio.run(answer())
    return response.status, json.loads(cast(bytes, response.body))


def test_a_skus_windows_in_a_range_come_in_start_order_with_final_once_closed(
    service: ServiceTest,
) -> None:
    status, body = get(
        service, "/skus/A/sales?from=2027-01-15T09:00:00Z&to=" + str(T0 + 3 * HOUR), sku="A"
    )
    assert status == 200
    assert body == {
        "sku": "A",
        "windows": [
            {
                "start": "2027-01-15T09:00:00.000Z",
                "end": "2027-01-15T10:00:00.000Z",
                "units": 2,
                "revenue_cents": 300,
                "orders": 1,
                "final": True,
            },
            {
                "start": "2027-01-15T10:00:00.000Z",
                "end": "2027-01-15T11:00:00.000Z",
                "units": 2,
                "revenue_cents": 300,
                "orders": 1,
                "final": False,  # stream time T0+3h is within its grace
            },
        ],
    }
    assert len(get(service, "/skus/A/sales", sku="A")[1]["windows"]) == 4  # every one retained


def test_a_users_spend_is_answered_per_day_window(service: ServiceTest) -> None:
    status, body = get(
        service, "/users/u1/spend?from=" + str(T0) + "&to=" + str(T0 + 1), user_id="u1"
    )
    assert (status, body["user_id"]) == (200, "u1")
    assert body["windows"] == [
        {
            "start": "2027-01-15T08:00:00.000Z",
            "end": "2027-01-16T08:00:00.000Z",
            "spent_cents": 1200,
            "orders": 4,
            "final": False,
        }
    ]


def test_a_key_never_seen_is_404_and_a_bad_range_400(service: ServiceTest) -> None:
    status, body = get(service, "/skus/NOPE/sales", sku="NOPE")
    assert (status, body["error"]) == (404, "sku_sales has no entry for 'NOPE'")
    status, body = get(service, "/skus/A/sales?from=yesterday", sku="A")
    assert (status, body["error"]) == (400, "bad range")
    assert "from='yesterday'" in body["details"]["range"]
    status, body = get(service, f"/skus/A/sales?from={T0 + 1}&to={T0}", sku="A")
    assert status == 400 and "is after to" in body["details"]["range"]


def test_range_bounds_are_epoch_milliseconds_or_iso_8601() -> None:
    assert instant("1800000000000", "from") == 1_800_000_000_000
    assert instant("2027-01-15T08:00:00+01:00", "to") == T0 - HOUR
    assert instant("2027-01-15T08:00:00", "to") == T0  # no offset: UTC
    assert window_range({}) == (None, None)
    with pytest.raises(BadRange):
        instant("soon", "to")
