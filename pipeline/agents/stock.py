"""Order lines (re-keyed by SKU) and stock_adjusted → stock table, stock_levels,
low_stock_alerts.

Both inputs are keyed by SKU with the changelog's partition count, so each SKU's
row is only touched by the worker that owns its partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import AppT, Message, StreamT

from pipeline.domain.encoding import decode_order_line, decode_stock_row, encode_stock_row
from pipeline.domain.rules import Position, StockRow, apply_stock_delta, source_id
from pipeline.streaming.outputs import Outputs, millis
from pipeline.streaming.processing import Event, EventRunner, Prepared, RowBatch
from pipeline.streaming.producer import Outgoing
from pipeline.streaming.tables import Tables

from .orders import ORDERS_STREAM

ADJUSTMENTS_STREAM = "adjustments"


def register(
    app: AppT, outputs: Outputs, tables: Tables, runner: EventRunner, threshold: int
) -> None:
    names = outputs.names
    source = app.topic(
        names.order_lines_by_sku,
        names.stock_adjusted,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    stock = tables.stock

    def apply(
        rows: RowBatch[StockRow],
        derived: list[Outgoing],
        event: Event,
        change: tuple[bytes, int, str, Position, int],
    ) -> None:
        sku_key, delta, source, position, at_ms = change
        result = apply_stock_delta(
            rows.get(sku_key, event),
            delta=delta,
            source=source,
            position=position,
            threshold=threshold,
        )
        if result is None:  # already applied before a crash or rebalance
            outputs.metrics.replays_skipped.labels(stock.name).inc()
            return
        sku = sku_key.decode()
        available = result.row.available
        derived.append(
            outputs.record(
                names.stock_levels, sku, {"sku": sku, "available": available, "updated_at": at_ms}
            )
        )
        if result.crossed_low_stock:
            derived.append(
                outputs.record(
                    names.low_stock_alerts,
                    sku,
                    {"sku": sku, "available": available, "threshold": threshold, "at": at_ms},
                )
            )
        rows.put(sku_key, result.row, event)

    async def change_of(message: Message) -> tuple[bytes, int, str, Position, int]:
        """(SKU key, delta, source, position, event time) of an order line or adjustment."""
        if message.topic == names.order_lines_by_sku:
            line = decode_order_line((message.key or b"").decode(), message.value or b"")
            return (
                line.sku.encode(),
                -line.quantity,
                source_id(ORDERS_STREAM, line.order_partition),
                Position(line.order_offset, line.line_index),
                line.created_at_ms,
            )
        adjustment = await outputs.codec.decode(message.topic, message.value)
        return (
            message.key or adjustment["sku"].encode(),
            adjustment["delta"],
            source_id(ADJUSTMENTS_STREAM, message.partition),
            Position(message.offset),
            millis(adjustment["adjusted_at"]),
        )

    async def handle(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        rows = RowBatch(stock, decode_stock_row, encode_stock_row, outputs.send, in_flight)
        derived: list[Outgoing] = []
        for event in events:
            apply(rows, derived, event, await change_of(event.message))
        return await rows.send(derived)

    @app.agent(source, name="stock")
    async def process_stock(stream: StreamT[bytes]) -> None:
        await runner.consume(stream, handle)
