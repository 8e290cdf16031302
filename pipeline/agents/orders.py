"""order_created → user order stats (keyed by user_id), user_order_stats, and the
order's lines re-keyed by SKU for the stock agent.

Runs on the worker that owns the order's user_id partition, so one user's orders
are applied in the order they were placed.
"""

from __future__ import annotations

from typing import Any

from pipeline.domain.encoding import (
    decode_order_line,
    decode_user_stats,
    encode_order_line,
    encode_user_stats,
)
from pipeline.domain.records import millis, user_order_stats, user_stats_view
from pipeline.domain.rules import UserOrderStats, apply_order, order_lines
from pipeline.streaming.topology import Emit, TableSpec, Topology, Update

USER_STATS = TableSpec(
    "user_order_stats",
    encode_user_stats,
    decode_user_stats,
    help="Order count, total spent and last order per user.",
)


def register(topology: Topology) -> None:
    topics = topology.topics
    lines = topology.repartition("order_lines_by_sku", encode_order_line, decode_order_line)
    orders = topology.agent("orders", table=USER_STATS, emits=[topics.user_order_stats, lines.name])

    @orders.on(topics.order_created)
    def order(
        user_id: str, order: dict[str, Any], stats: UserOrderStats | None
    ) -> Update[UserOrderStats]:
        created_at_ms = millis(order["created_at"])
        updated = apply_order(stats, order_id=order["order_id"], total_cents=order["total_cents"])
        by_sku = order_lines(
            order_id=order["order_id"], items=order["items"], created_at_ms=created_at_ms
        )
        return Update(
            updated,
            emit=[
                *(Emit(lines.name, line.sku, line) for line in by_sku),
                Emit(
                    topics.user_order_stats,
                    user_id,
                    user_order_stats(user_id, updated, created_at_ms),
                ),
            ],
        )

    topology.view("/users/{user_id}/orders", USER_STATS, user_stats_view)
