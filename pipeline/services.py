"""The services this project deploys, each its own Faust app and consumer group.

- the shop pipeline (``faust -A pipeline.app worker``): notifications, order stats,
  stock, and the HTTP ingest of the source events;
- the loyalty-points service (``faust -A pipeline.points_app worker``): points per
  user, from the same orders. It was added without a change to the shop pipeline: a
  new service subscribes to the events it needs.

Declaring a service starts nothing: tools and tests use these to know a service's
topics without running it.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.agents import notifications, orders, points, stock
from pipeline.settings import Settings
from pipeline.streaming.topology import Topology
from pipeline.topics import TopicNames

POINTS_APP_SUFFIX = "-points"


def shop(settings: Settings) -> Topology:
    topology = Topology(settings)
    topics = TopicNames.from_settings(settings)
    notifications.register(topology, topics)
    orders.register(topology, topics)
    stock.register(topology, topics, settings.low_stock_threshold)
    topology.ingest("/users", topics.user_registered, "user_id")
    topology.ingest("/orders", topics.order_created, "user_id")
    topology.ingest("/stock", topics.stock_adjusted, "sku")
    return topology


def points_settings(settings: Settings) -> Settings:
    """The points service's settings: the shop's, under an app id of its own."""
    return replace(settings, app_id=settings.app_id + POINTS_APP_SUFFIX)


def loyalty_points(settings: Settings) -> Topology:
    """``settings`` are the points service's own (``points_settings``)."""
    topology = Topology(settings)
    points.register(topology, TopicNames.from_settings(settings))
    return topology


def every_service(settings: Settings) -> list[Topology]:
    """Every service of a deployment whose shop pipeline runs with ``settings``."""
    return [shop(settings), loyalty_points(points_settings(settings))]
