"""The services this project deploys, each its own Faust app and consumer group.

- the shop pipeline (``faust -A pipeline.app worker``): notifications, order stats,
  stock, and the HTTP ingest of the source events;
- the loyalty-points service (``faust -A pipeline.points_app worker``): points per
  user, from the same orders. It was added without a change to the shop pipeline: a
  new service subscribes to the events it needs;
- the analytics service (``faust -A pipeline.analytics_app worker``): sales per SKU and
  hour, users' spend over a sliding day, in event time.

Declaring a service starts nothing: tools and tests use these to know a service's
topics without running it.
"""

from __future__ import annotations

from dataclasses import replace

from pipeline.agents import analytics, notifications, orders, points, stock
from pipeline.settings import Settings
from pipeline.streaming.topology import Topology
from pipeline.topics import TopicNames

POINTS_APP_SUFFIX = "-points"
ANALYTICS_APP_SUFFIX = "-analytics"


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


def analytics_settings(settings: Settings) -> Settings:
    """The analytics service's settings: the shop's, under an app id of its own."""
    return replace(settings, app_id=settings.app_id + ANALYTICS_APP_SUFFIX)


def order_analytics(settings: Settings) -> Topology:
    """``settings`` are the analytics service's own (``analytics_settings``)."""
    topology = Topology(settings)
    analytics.register(
        topology,
        TopicNames.from_settings(settings),
        settings.analytics_grace_ms,
        settings.analytics_retention_ms,
    )
    return topology


def every_service(settings: Settings) -> list[Topology]:
    """Every service of a deployment whose shop pipeline runs with ``settings``."""
    return [
        shop(settings),
        loyalty_points(points_settings(settings)),
        order_analytics(analytics_settings(settings)),
    ]
