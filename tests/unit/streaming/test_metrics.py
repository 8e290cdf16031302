from __future__ import annotations

import time

from faust.types import TP

from pipeline.engine.lag import Lags
from pipeline.streaming.metrics import Metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_rebalance_is_counted_at_its_start_and_timed_until_its_end() -> None:
    clock = Clock()
    metrics = Metrics(clock=clock)
    metrics.rebalance_started()
    clock.now += 2.0
    # Faust starts another rebalance before the first one's recovery ended: one stretch.
    metrics.rebalance_started()
    clock.now += 13.0
    metrics.rebalance_ended()
    metrics.rebalance_ended()  # a second end without a start measures nothing
    sample = metrics.registry.get_sample_value
    assert sample("pipeline_rebalances_total") == 2
    assert sample("pipeline_rebalance_seconds_count") == 1
    assert sample("pipeline_rebalance_seconds_sum") == 15.0
    assert sample("pipeline_rebalance_seconds_bucket", {"le": "15.0"}) == 1
    assert sample("pipeline_rebalance_seconds_bucket", {"le": "10.0"}) == 0


def test_a_settled_batch_counts_its_events_and_its_oldest_events_latency() -> None:
    metrics = Metrics()
    metrics.batch_settled(
        {"order_created": 3, "stock_adjusted": 1},
        {"order_created": time.time() - 0.2, "stock_adjusted": time.time() + 5},
    )
    sample = metrics.registry.get_sample_value
    orders, stock = {"topic": "order_created"}, {"topic": "stock_adjusted"}
    assert sample("pipeline_events_processed_total", orders) == 3
    assert sample("pipeline_processing_latency_seconds_count", orders) == 1
    assert 0.2 <= (sample("pipeline_processing_latency_seconds_sum", orders) or 0) < 1.0
    assert sample("pipeline_processing_latency_seconds_bucket", {**orders, "le": "0.1"}) == 0
    # A producer clock ahead of ours is no negative latency.
    assert sample("pipeline_processing_latency_seconds_sum", stock) == 0.0


def test_lags_are_read_at_each_scrape_and_partitions_no_longer_held_disappear() -> None:
    metrics = Metrics()
    sample = metrics.registry.get_sample_value
    assert b"pipeline_consumer_lag" in metrics.exposition()[0]  # declared before any read
    held = Lags(consumer={TP("order_created", 3): 12}, standby={("stock", 5): 4})
    metrics.lags.read = lambda: held
    assert sample("pipeline_consumer_lag", {"topic": "order_created", "partition": "3"}) == 12
    assert sample("pipeline_standby_lag", {"table": "stock", "partition": "5"}) == 4
    held = Lags(consumer={}, standby={})
    assert sample("pipeline_consumer_lag", {"topic": "order_created", "partition": "3"}) is None
