"""user_registered → notifications (the welcome email request)."""

from __future__ import annotations

from typing import Any

from pipeline.domain.records import welcome_notification
from pipeline.domain.rules import millis
from pipeline.streaming.topology import Emit, Topology
from pipeline.topics import TopicNames


def register(topology: Topology, topics: TopicNames) -> None:
    notifications = topology.agent("notifications", emits=[topics.notifications])

    @notifications.on(topics.user_registered)
    def welcome(user_id: str, user: dict[str, Any]) -> list[Emit]:
        request = welcome_notification(user, millis(user["registered_at"]))
        return [Emit(topics.notifications, user["user_id"], request)]
