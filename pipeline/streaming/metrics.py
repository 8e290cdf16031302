"""Prometheus metrics of one worker, served at GET /metrics.

A registry per app (not the process-global one) so several apps in one test
process do not clash.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

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
            "(pipeline.streaming.restore).",
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

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
