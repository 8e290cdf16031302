from __future__ import annotations

from typing import Any, cast

import pytest

from pipeline.engine.fixes import TransactionalTransport
from pipeline.services import loyalty_points, points_settings, shop
from pipeline.settings import Settings
from pipeline.worker import UnsupportedGuarantee, create_app


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


def test_exactly_once_needs_rocksdb() -> None:
    with pytest.raises(UnsupportedGuarantee, match="rocksdb"):
        create_app(shop(Settings(processing_guarantee="exactly_once", store="memory://")))


def test_exactly_once_commits_in_transactions_and_faust_commits_nothing() -> None:
    app = create_app(shop(Settings(processing_guarantee="exactly_once")))
    assert app.transactions is not None and app.commits_in_transactions
    assert not app.in_transaction  # Faust's own exactly_once is not used
    assert isinstance(app.transport, TransactionalTransport)
    assert create_app(shop(Settings())).transactions is None


def test_the_worker_id_is_the_consumers_group_instance_id() -> None:
    assert create_app(shop(Settings())).conf.consumer_group_instance_id is None
    static = create_app(shop(Settings(worker_id="worker-1")))
    assert static.conf.consumer_group_instance_id == "worker-1"


def test_a_rebalance_clears_the_agents_row_caches_at_its_start_and_end() -> None:
    app = create_app(shop(Settings(app_id="unit")))
    # One row cache per table, each cleared by its ``clear`` called back.
    caches = [cast(Any, callback).__self__ for callback in app.rebalance_callbacks]
    assert len(caches) == 3
    for clear in (app.on_rebalance_start, app.on_rebalance_end):
        for cache in caches:
            cache.put([(b"u1", "row")])
        clear()
        assert all(cache.get(b"u1") is None for cache in caches)
    assert create_app(shop(Settings(app_id="unit", row_cache_rows=0))).rebalance_callbacks == []
