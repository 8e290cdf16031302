"""order_created → user order stats table, user_order_stats, order lines by SKU.

Runs on the worker that owns the order's user_id partition, so one user's orders
are applied in the order they were placed.
"""

from __future__ import annotations

from collections.abc import Sequence

from faust.types import AppT, StreamT

from pipeline.domain.encoding import decode_user_stats, encode_order_line, encode_user_stats
from pipeline.domain.rules import Position, apply_order, order_lines_by_sku, source_id
from pipeline.streaming.outputs import Outputs, millis
from pipeline.streaming.processing import Event, EventRunner, Prepared, RowBatch
from pipeline.streaming.producer import Outgoing
from pipeline.streaming.tables import Tables

ORDERS_STREAM = "orders"


def register(app: AppT, outputs: Outputs, tables: Tables, runner: EventRunner) -> None:
    names = outputs.names
    source = app.topic(
        names.order_created,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    user_stats = tables.user_stats

    async def handle(events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        rows = RowBatch(user_stats, decode_user_stats, encode_user_stats, outputs.send, in_flight)
        derived: list[Outgoing] = []
        for event in events:
            message = event.message
            order = await outputs.codec.decode(message.topic, message.value)
            user_key: bytes = message.key or order["user_id"].encode()
            stats = apply_order(
                rows.get(user_key, event),
                order_id=order["order_id"],
                total_cents=order["total_cents"],
                source=source_id(ORDERS_STREAM, message.partition),
                position=Position(message.offset),
            )
            if stats is None:  # a replay of an order already applied, lines included
                outputs.metrics.replays_skipped.labels(user_stats.name).inc()
                continue
            created_at_ms = millis(order["created_at"])
            lines = order_lines_by_sku(
                order_id=order["order_id"],
                items=order["items"],
                order_partition=message.partition,
                order_offset=message.offset,
                created_at_ms=created_at_ms,
            )
            user_id = user_key.decode()
            derived += [
                Outgoing(names.order_lines_by_sku, line.sku.encode(), encode_order_line(line))
                for line in lines
            ]
            derived.append(
                outputs.record(
                    names.user_order_stats,
                    user_id,
                    {
                        "user_id": user_id,
                        "order_count": stats.order_count,
                        "total_spent_cents": stats.total_spent_cents,
                        "last_order_id": stats.last_order_id,
                        "updated_at": created_at_ms,
                    },
                )
            )
            rows.put(user_key, stats, event)
        return await rows.send(derived)

    @app.agent(source, name="orders")
    async def process_orders(stream: StreamT[bytes]) -> None:
        await runner.consume(stream, handle)
