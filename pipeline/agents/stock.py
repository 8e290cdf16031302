"""Order lines (re-keyed by SKU) and stock_adjusted → stock table, stock_levels,
low_stock_alerts.

Both inputs are keyed by SKU with the changelog's partition count, so each SKU's
row is only touched by the worker that owns its partition.
"""

from __future__ import annotations

from faust.types import AppT, Message, StreamT

from pipeline.encoding import decode_order_line, decode_stock_row, encode_stock_row
from pipeline.outputs import Outgoing, Outputs, millis
from pipeline.processing import EventRunner
from pipeline.rules import Position, apply_stock_delta, source_id
from pipeline.tables import Tables

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

    async def apply(
        sku_key: bytes, delta: int, source: str, position: Position, at_ms: int
    ) -> None:
        stored = stock.get(sku_key)
        change = apply_stock_delta(
            decode_stock_row(stored) if stored is not None else None,
            delta=delta,
            source=source,
            position=position,
            threshold=threshold,
        )
        if change is None:  # already applied before a crash or rebalance
            outputs.metrics.replays_skipped.labels(stock.name).inc()
            return
        sku = sku_key.decode()
        available = change.row.available
        derived: list[Outgoing] = [
            outputs.record(
                names.stock_levels, sku, {"sku": sku, "available": available, "updated_at": at_ms}
            )
        ]
        if change.crossed_low_stock:
            derived.append(
                outputs.record(
                    names.low_stock_alerts,
                    sku,
                    {"sku": sku, "available": available, "threshold": threshold, "at": at_ms},
                )
            )
        await outputs.send_all(derived)
        stock[sku_key] = encode_stock_row(change.row)

    async def handle(message: Message) -> None:
        if message.topic == names.order_lines_by_sku:
            line = decode_order_line((message.key or b"").decode(), message.value or b"")
            await apply(
                line.sku.encode(),
                -line.quantity,
                source_id(ORDERS_STREAM, line.order_partition),
                Position(line.order_offset, line.line_index),
                line.created_at_ms,
            )
        else:
            adjustment = await outputs.codec.decode(message.topic, message.value)
            await apply(
                message.key or adjustment["sku"].encode(),
                adjustment["delta"],
                source_id(ADJUSTMENTS_STREAM, message.partition),
                Position(message.offset),
                millis(adjustment["adjusted_at"]),
            )

    @app.agent(source, name="stock")
    async def process_stock(stream: StreamT[bytes]) -> None:
        async for event in stream.events():
            await runner.run(event.message, handle)
