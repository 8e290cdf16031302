"""Order lines (re-keyed by SKU) and stock_adjusted → stock table, stock_levels,
low_stock_alerts.

Both inputs are keyed by SKU with the changelog's partition count, so each SKU's
row is only touched by the worker that owns its partition. Stock is low when
``available < threshold`` (PIPELINE_LOW_STOCK_THRESHOLD); an alert fires on each
change that takes it there from ``>= threshold``.
"""

from __future__ import annotations

from typing import Any

from pipeline.domain.encoding import decode_stock_row, encode_stock_row
from pipeline.domain.records import low_stock_alert, stock_level, stock_view
from pipeline.domain.rules import OrderLine, StockRow, apply_stock_delta, millis
from pipeline.streaming.topology import Emit, TableSpec, Topology, Update
from pipeline.topics import TopicNames

STOCK = TableSpec("stock", encode_stock_row, decode_stock_row, help="Units available per SKU.")


def register(topology: Topology, topics: TopicNames, threshold: int) -> None:
    """The stock agent; ``threshold``: below it a SKU raises a low-stock alert."""
    stock = topology.agent(
        "stock", table=STOCK, emits=[topics.stock_levels, topics.low_stock_alerts]
    )

    def change(sku: str, row: StockRow | None, delta: int, at_ms: int) -> Update[StockRow]:
        result = apply_stock_delta(row, delta=delta, threshold=threshold)
        emit = [Emit(topics.stock_levels, sku, stock_level(sku, result.row, at_ms))]
        if result.crossed_low_stock:
            alert = low_stock_alert(sku, result.row, threshold, at_ms)
            emit.append(Emit(topics.low_stock_alerts, sku, alert))
        return Update(result.row, emit)

    @stock.on(topics.order_lines_by_sku)
    def order_line(sku: str, line: OrderLine, row: StockRow | None) -> Update[StockRow]:
        return change(sku, row, -line.quantity, line.created_at_ms)

    @stock.on(topics.stock_adjusted)
    def adjustment(sku: str, adjustment: dict[str, Any], row: StockRow | None) -> Update[StockRow]:
        return change(sku, row, adjustment["delta"], millis(adjustment["adjusted_at"]))

    topology.view("/stock/{sku}", STOCK, stock_view)
