"""order_created → loyalty points per user, user_points.

The points service's one agent: its own app and consumer group (pipeline.points_app),
reading the same orders as the shop pipeline without the shop pipeline knowing.
"""

from __future__ import annotations

from pipeline.domain.encoding import decode_points, encode_points
from pipeline.domain.records import points_view, user_points
from pipeline.domain.rules import Order, UserPoints, apply_points, millis
from pipeline.streaming.topology import Emit, TableSpec, Topology, Update
from pipeline.topics import TopicNames

POINTS = TableSpec("points", encode_points, decode_points, help="Loyalty points per user.")


def register(topology: Topology, topics: TopicNames) -> None:
    points = topology.agent("points", table=POINTS, emits=[topics.user_points])

    @points.on(topics.order_created)
    def order(user_id: str, order: Order, row: UserPoints | None) -> Update[UserPoints]:
        updated = apply_points(row, order)
        record = user_points(user_id, updated, millis(order["created_at"]))
        return Update(updated, [Emit(topics.user_points, user_id, record)])

    topology.view("/users/{user_id}/points", POINTS, points_view)
