"""user_registered, order_created → notifications: a welcome email for each registration,
and a confirmation of each order at the address of the user's latest registration (a
stream-table join: an order whose user is not registered yet is held until they are)."""

from __future__ import annotations

from typing import Any

from pipeline.domain.encoding import decode_address, encode_address
from pipeline.domain.records import order_confirmation, welcome_notification
from pipeline.domain.rules import Order, UserAddress, millis
from pipeline.streaming.topology import Emit, TableSpec, Topology, Update
from pipeline.topics import TopicNames

ADDRESSES = TableSpec(
    "addresses",
    encode_address,
    decode_address,
    help="Each user's email address, from their latest registration.",
)


def register(topology: Topology, topics: TopicNames) -> None:
    notifications = topology.join("notifications", table=ADDRESSES, emits=[topics.notifications])

    @notifications.on_table(topics.user_registered)
    def registered(
        user_id: str, user: dict[str, Any], address: UserAddress | None
    ) -> Update[UserAddress]:
        welcome = welcome_notification(user, millis(user["registered_at"]))
        return Update(UserAddress(user["email"]), [Emit(topics.notifications, user_id, welcome)])

    @notifications.on_stream(topics.order_created)
    def ordered(user_id: str, order: Order, address: UserAddress) -> list[Emit]:
        return [Emit(topics.notifications, user_id, order_confirmation(user_id, order, address))]
