from __future__ import annotations

import pytest

from pipeline.services import loyalty_points, points_settings, shop
from pipeline.settings import Settings
from pipeline.streaming.app import UnsupportedGuarantee, create_app


def test_the_shop_app_runs_its_agents_on_raw_tables() -> None:
    app = create_app(shop(Settings(app_id="unit", topic_prefix="unit.")))
    assert sorted(agent.name for agent in app.agents.values()) == [
        "notifications",
        "orders",
        "stock",
    ]
    for table in app.tables.values():
        # Raw keys: the changelog and the web router hash the bytes the producer hashed.
        assert table.changelog_topic.prepare_key(b"u1", None)[0] == b"u1"
        assert table.partitions == 8


def test_the_points_app_is_a_consumer_group_of_its_own() -> None:
    app = create_app(loyalty_points(points_settings(Settings(app_id="unit"))))
    assert app.conf.id == "unit-points"
    assert [agent.name for agent in app.agents.values()] == ["points"]
    assert [table.name for table in app.tables.values()] == ["points"]


def test_exactly_once_is_refused_with_a_reason() -> None:
    with pytest.raises(UnsupportedGuarantee, match="idempotent"):
        create_app(shop(Settings(processing_guarantee="exactly_once")))


def test_the_worker_id_is_the_consumers_group_instance_id() -> None:
    assert create_app(shop(Settings())).conf.consumer_group_instance_id is None
    static = create_app(shop(Settings(worker_id="worker-1")))
    assert static.conf.consumer_group_instance_id == "worker-1"
