"""Prometheus metrics of one worker, served at GET /metrics.

A registry per app (not the process-global one) so several apps in one test
process do not clash. The hot path records per batch, not per event: a settled
batch's event counts and latency by topic, and its size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Up to pipeline.settings ``max_batch_events``.
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
# A rebalance after a crash waits out the 15 s session timeout.
REBALANCE_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 15, 20, 30, 60, 120, 300)


@dataclass(frozen=True)
class Lags:
    """How far behind a worker is (pipeline.engine.lag reads them)."""

    # Records written that the consumer has not fetched, by source (topic, partition).
    consumer: dict[tuple[str, int], int]
    # Changelog records a standby has not applied, by (table, partition).
    standby: dict[tuple[str, int], int]


class LagCollector(Collector):
    """The lags (pipeline.engine.lag) as gauges, read at every scrape: a partition no
    longer held disappears from them instead of keeping its last value."""

    def __init__(self) -> None:
        self.read: Callable[[], Lags] | None = None

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "pipeline_consumer_lag",
                "Records of an assigned source partition not fetched yet "
                "(high watermark - position).",
                labels=["topic", "partition"],
            ),
            GaugeMetricFamily(
                "pipeline_standby_lag",
                "Changelog records of a standby partition its table has not applied yet.",
                labels=["table", "partition"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        consumer, standby = self._families()
        if self.read is not None:
            lags = self.read()
            for (topic, partition), lag in sorted(lags.consumer.items()):
                consumer.add_metric([topic, str(partition)], lag)
            for (table, partition), lag in sorted(lags.standby.items()):
                standby.add_metric([table, str(partition)], lag)
        yield consumer
        yield standby


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Measures rebalances (time.monotonic; a test passes its own).
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.events_processed = Counter(
            "pipeline_events_processed",
            "Source events handled by an agent (applied, skipped as replay, or dead-lettered).",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "pipeline_processing_retries",
            "Failed processing attempts that were retried.",
            ["topic"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "pipeline_dead_letters",
            "Messages sent to a dead-letter topic.",
            ["topic", "error_class"],
            registry=self.registry,
        )
        self.replays_skipped = Counter(
            "pipeline_replays_skipped",
            "Events a table row had already applied (redelivery after a crash or rebalance).",
            ["table"],
            registry=self.registry,
        )
        self.foreign_replays = Counter(
            "pipeline_foreign_replays_skipped",
            "Replayed dead letters meant for another service reading the same topic.",
            ["topic"],
            registry=self.registry,
        )
        self.join_records = Counter(
            "pipeline_join_records",
            "Stream records of a join by outcome: held for want of their key's table row, "
            "released once it came, expired (held too long) or refused (too many held); "
            "the last two are dead-lettered.",
            ["join", "outcome"],
            registry=self.registry,
        )
        self.derived_events = Counter(
            "pipeline_derived_events",
            "Records the agents produced, by topic: derived events and table changelog records.",
            ["topic"],
            registry=self.registry,
        )
        self.changelog_events_recovered = Counter(
            "pipeline_changelog_events_recovered",
            "Changelog records read into a table (recovery and standby replicas).",
            ["table"],
            registry=self.registry,
        )
        self.changelog_records_restored = Counter(
            "pipeline_changelog_records_restored",
            "Changelog records bulk-loaded into a RocksDB table before consuming "
            "(pipeline.engine.restore).",
            ["table"],
            registry=self.registry,
        )
        self.routed_requests = Counter(
            "pipeline_routed_requests",
            "Table queries forwarded to the worker owning the key.",
            ["table"],
            registry=self.registry,
        )
        self.copy_answers = Counter(
            "pipeline_copy_answers",
            "Table queries answered from a copy (standby or restored) while the owner was away.",
            ["table"],
            registry=self.registry,
        )
        self.assigned_partitions = Gauge(
            "pipeline_assigned_partitions",
            "Topic partitions currently assigned to this worker.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "pipeline_batch_size",
            "Events per batch an agent takes.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.processing_latency = Histogram(
            "pipeline_processing_latency_seconds",
            "From a source event's timestamp to its derived events and changelog records "
            "acknowledged by the broker; one observation per settled batch and topic, of "
            "the batch's oldest event (so an upper bound for the others).",
            ["topic"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transactions_committed = Counter(
            "pipeline_transactions_committed",
            "Transactions this worker committed (exactly_once; pipeline.streaming.transactions).",
            registry=self.registry,
        )
        self.transaction_events = Counter(
            "pipeline_transaction_events",
            "Consumed events whose outputs and offsets this worker committed in transactions.",
            registry=self.registry,
        )
        self.transaction_commit_seconds = Histogram(
            "pipeline_transaction_commit_seconds",
            "From the end of a transaction's commit interval to its commit acknowledged.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.rebalances = Counter(
            "pipeline_rebalances",
            "Rebalances of the consumer group this worker took part in (its first "
            "assignment included).",
            registry=self.registry,
        )
        self.rebalance_seconds = Histogram(
            "pipeline_rebalance_seconds",
            "From a rebalance's start to this worker consuming again (tables recovered).",
            buckets=REBALANCE_BUCKETS,
            registry=self.registry,
        )
        self.gc_pauses = Histogram(
            "pipeline_gc_pause_seconds",
            "Pauses of the worker's cyclic garbage collector, by the oldest generation "
            "collected (pipeline.streaming.garbage_collection).",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=self.registry,
        )
        # Windowed tables (pipeline.streaming.windows).
        self.late_events = Counter(
            "pipeline_late_events",
            "Events all of whose windows had closed: counted in none, dead-lettered.",
            ["table", "topic"],
            registry=self.registry,
        )
        self.late_window_misses = Counter(
            "pipeline_late_window_misses",
            "Closed windows an event missed while it still counted in open ones (hopping).",
            ["table", "topic"],
            registry=self.registry,
        )
        self.windows_closed = Counter(
            "pipeline_windows_closed",
            "Windows closed (stream time past their end + grace), their finals emitted.",
            ["table"],
            registry=self.registry,
        )
        self.windows_expired = Counter(
            "pipeline_windows_expired",
            "Windows deleted from the store and the changelog, past their retention.",
            ["table"],
            registry=self.registry,
        )
        self._rebalance_started_at: float | None = None
        self.lags = LagCollector()
        self.registry.register(self.lags)

    def transaction_committed(self, events: int, seconds: float) -> None:
        self.transactions_committed.inc()
        self.transaction_events.inc(events)
        self.transaction_commit_seconds.observe(seconds)

    def batch_settled(self, counts: Mapping[str, int], oldest: Mapping[str, float]) -> None:
        """A batch was acknowledged: ``counts`` events by topic, the ``oldest`` event's
        timestamp (seconds since the epoch) by topic."""
        for topic, count in counts.items():
            self.events_processed.labels(topic).inc(count)
        now = time.time()
        for topic, timestamp in oldest.items():
            # Producer clocks may be ahead of ours.
            self.processing_latency.labels(topic).observe(max(0.0, now - timestamp))

    def rebalance_started(self) -> None:
        self.rebalances.inc()
        # A rebalance that starts before the last one ended continues it.
        if self._rebalance_started_at is None:
            self._rebalance_started_at = self.clock()

    def rebalance_ended(self) -> None:
        started = self._rebalance_started_at
        if started is not None:
            self.rebalance_seconds.observe(self.clock() - started)
            self._rebalance_started_at = None

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
