from __future__ import annotations

from pipeline.kafka.naming import copartitioning_problems
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.topics import TopicNames


def test_contract_names_without_prefix() -> None:
    names = TopicNames.from_settings(Settings())
    assert names.order_created == "order_created"
    assert names.dead_letters(names.order_created) == "order_created.dlq"
    assert names.changelog("stock") == "shop-pipeline-stock-changelog"


def test_prefix_applies_to_contract_topics() -> None:
    names = TopicNames(prefix="t1.", app_id="app")
    assert names.stock_levels == "t1.stock_levels"
    assert names.order_lines_by_sku == "app-order_lines_by_sku"
    assert names.logical("t1.stock_levels") == "stock_levels"


def test_copartitioning_problem_names_the_topics() -> None:
    specs = shop(Settings(app_id="app")).specs()
    counts = {spec.name: 8 for spec in specs}
    assert copartitioning_problems(specs, counts, 8) == []
    counts["stock_adjusted"] = 4
    counts["notifications"] = 3  # not co-partitioned with anything: fine
    (problem,) = copartitioning_problems(specs, counts, 8)
    assert "table 'stock'" in problem
    assert "stock_adjusted=4" in problem and "must all have 8 partitions" in problem
