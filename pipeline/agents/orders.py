"""order_created → user order stats (keyed by user_id), user_order_stats, and the
order's lines re-keyed by SKU for the stock agent.

Runs on the worker that owns the order's user_id partition, so one user's orders
are applied in the order they were placed.
"""

from __future__ import annotations

from pipeline.domain import encoding
from pipeline.domain.records import user_order_stats, user_stats_view
from pipeline.domain.rules import Order, UserOrderStats, apply_order, millis, order_lines
from pipeline.streaming.topology import Emit, TableSpec, Topology, Update
from pipeline.topics import TopicNames

USER_STATS = TableSpec(
    "user_order_stats",
    encoding.encode_user_stats,
    encoding.decode_user_stats,
    help="Order count, total spent and last order per user.",
)


def register(topology: Topology, topics: TopicNames) -> None:
    lines = topology.repartition(
        "order_lines_by_sku", encoding.encode_order_line, encoding.decode_order_line
    )
    orders = topology.agent("orders", table=USER_STATS, emits=[topics.user_order_stats, lines.name])

    @orders.on(topics.order_created)
    def order(user_id: str, order: Order, stats: UserOrderStats | None) -> Update[UserOrderStats]:
        updated = apply_order(stats, order)
        record = user_order_stats(user_id, updated, millis(order["created_at"]))
        emit = [lines.emit(line.sku, line) for line in order_lines(order)]
        return Update(updated, [*emit, Emit(topics.user_order_stats, user_id, record)])

    topology.view("/users/{user_id}/orders", USER_STATS, user_stats_view)
