from __future__ import annotations

from typing import Any

import pytest

from pipeline.kafka.naming import TopicSpec
from pipeline.services import loyalty_points, points_settings, shop
from pipeline.settings import Settings
from pipeline.streaming.topology import Emit, Topology

SETTINGS = Settings(app_id="app")


def test_the_shop_s_topics_follow_from_its_agents() -> None:
    specs = {spec.name: spec for spec in shop(SETTINGS).specs()}
    # The orders' and the notifications' tables are co-partitioned through order_created.
    assert specs["order_created"] == TopicSpec("order_created", "addresses")
    assert specs["app-user_order_stats-changelog"].copartition_group == "addresses"
    assert specs["app-order_lines_by_sku"] == TopicSpec("app-order_lines_by_sku", "stock")
    assert specs["stock_adjusted"] == TopicSpec("stock_adjusted", "stock")
    assert specs["app-stock-changelog"] == TopicSpec("app-stock-changelog", "stock", True)
    assert specs["user_registered"] == TopicSpec("user_registered", "addresses")
    assert {name for name in specs if name.endswith(".dlq")} == {
        "user_registered.dlq",
        "order_created.dlq",
        "stock_adjusted.dlq",
        "app-order_lines_by_sku.dlq",
    }
    assert "user_points" not in specs


def test_a_join_s_topics_are_read_in_step_and_no_other_service_s() -> None:
    assert shop(SETTINGS).in_step == [frozenset({"user_registered", "order_created"})]
    assert loyalty_points(points_settings(SETTINGS)).in_step == []


def test_the_points_service_has_topics_of_its_own_and_shares_the_orders() -> None:
    points = loyalty_points(points_settings(SETTINGS))
    assert points.settings.app_id == "app-points"
    names = {spec.name for spec in points.specs()}
    assert names == {
        "order_created",
        "order_created.dlq",
        "user_points",
        "app-points-points-changelog",
    }
    assert points.encoded_topics == ["user_points"]


def test_the_shop_encodes_what_it_emits_and_ingests() -> None:
    assert shop(SETTINGS).encoded_topics == [
        "low_stock_alerts",
        "notifications",
        "order_created",
        "stock_adjusted",
        "stock_levels",
        "user_order_stats",
        "user_registered",
    ]


def test_re_keying_a_re_keyed_event_is_refused() -> None:
    topology = Topology(SETTINGS)
    first = topology.repartition("first", bytes, lambda key, data: data)
    second = topology.repartition("second", bytes, lambda key, data: data)
    agent = topology.agent("twice", emits=[second.name])

    @agent.on(first.name)
    def again(key: str, value: bytes) -> list[Emit]:
        return []

    with pytest.raises(ValueError, match="one re-keying hop"):
        topology.check()


def test_an_agent_without_a_rule_or_reading_an_undeclared_internal_topic_is_refused() -> None:
    topology = Topology(SETTINGS)
    topology.agent("idle")
    with pytest.raises(ValueError, match="no rule"):
        topology.check()
    topology = Topology(SETTINGS)
    agent = topology.agent("lost")
    agent.on("app-nowhere")(lambda key, value: [])
    with pytest.raises(ValueError, match="no repartition"):
        topology.check()


def test_one_rule_per_topic() -> None:
    agent = Topology(SETTINGS).agent("double")

    def rule(key: str, value: Any) -> list[Emit]:
        return []

    agent.on("order_created")(rule)
    with pytest.raises(ValueError, match="already has a rule"):
        agent.on("order_created")(rule)
