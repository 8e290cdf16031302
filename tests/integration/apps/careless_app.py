"""A Faust app whose one rule emits to a topic its agent does not declare: a bug, which must
stop the worker (tests/integration/test_undeclared_topic.py)."""

from __future__ import annotations

from typing import Any

from pipeline.settings import Settings
from pipeline.streaming.topology import Emit, Topology
from pipeline.topics import TopicNames
from pipeline.worker import create_app

settings = Settings.from_env()
topology = Topology(settings)
topics = TopicNames.from_settings(settings)
careless = topology.agent("careless", emits=[topics.user_order_stats])


@careless.on(topics.order_created)
def order(user_id: str, order: dict[str, Any]) -> list[Emit]:
    return [Emit(topics.notifications, user_id, {})]  # not in emits


app = create_app(topology)
