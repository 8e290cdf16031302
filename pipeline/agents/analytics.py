"""order_created → sales per SKU and hour (sku_sales_hourly, once per closed hour), and
each user's spend over a sliding day; both in event time, the order's created_at
(docs/windows.md).

The analytics service's agents, its own app and consumer group (pipeline.analytics_app).
An order's lines are summed per SKU and re-keyed by SKU through the service's own
repartition topic, stamped with the order's created_at, which the SKU windows read back as
the records' Kafka timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.domain.analytics import (
    Sale,
    SkuSales,
    UserSpend,
    add_sale,
    add_spend,
    decode_sale,
    decode_sku_sales,
    decode_user_spend,
    encode_sale,
    encode_sku_sales,
    encode_user_spend,
    merge_spend,
    sales_by_sku,
    sales_view,
    sku_sales_record,
    spend_view,
)
from pipeline.domain.rules import Order
from pipeline.streaming.event_time import EventTime
from pipeline.streaming.topology import Emit, Rekeyed, TableSpec, Topology
from pipeline.streaming.windowing import Hopping, Tumbling, Window
from pipeline.topics import TopicNames

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
CREATED_AT = EventTime.field("created_at")

SKU_SALES = TableSpec(
    "sku_sales", encode_sku_sales, decode_sku_sales, help="Sales per SKU and hour of event time."
)
USER_SPEND = TableSpec(
    "user_spend",
    encode_user_spend,
    decode_user_spend,
    help="Spend per user in 24-hour windows advancing hourly.",
)


def register(topology: Topology, topics: TopicNames, grace_ms: int, retention_ms: int) -> None:
    sales_topic = topology.repartition("sales_by_sku", encode_sale, decode_sale)
    rekey = topology.agent("analytics_sales", emits=[sales_topic.name], event_time=CREATED_AT)

    @rekey.on(topics.order_created)
    def order_sales(user_id: str, order: Order) -> Sequence[Rekeyed[Sale]]:
        return [sales_topic.emit(sku, sale) for sku, sale in sales_by_sku(order).items()]

    hourly = Tumbling(size_ms=HOUR_MS, grace_ms=grace_ms, retention_ms=retention_ms)
    sales = topology.windowed(
        "sku_sales", table=SKU_SALES, windows=hourly, emits=[topics.sku_sales_hourly]
    )

    @sales.on(sales_topic.name)
    def sale(sku: str, sale: Sale, window: Window, row: SkuSales | None) -> SkuSales:
        return add_sale(row, sale)

    @sales.on_close
    def hour_closed(sku: str, window: Window, row: SkuSales) -> Sequence[Emit]:
        record = sku_sales_record(sku, window.start, window.end, row)
        return [Emit(topics.sku_sales_hourly, sku, record)]

    topology.window_view("/skus/{sku}/sales", sales, sales_view)

    sliding_day = Hopping(
        size_ms=DAY_MS, step_ms=HOUR_MS, grace_ms=grace_ms, retention_ms=retention_ms
    )
    # Kept per hour (a pane) and merged into days when read: one row update per order,
    # not 24 (docs/windows.md, "Panes").
    spend = topology.windowed(
        "user_spend",
        table=USER_SPEND,
        windows=sliding_day,
        event_time=CREATED_AT,
        combine=merge_spend,
    )

    @spend.on(topics.order_created)
    def order_spend(user_id: str, order: Order, window: Window, row: UserSpend | None) -> UserSpend:
        return add_spend(row, order)

    topology.window_view("/users/{user_id}/spend", spend, spend_view)
