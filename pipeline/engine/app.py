"""The Faust app a worker runs (pipeline.worker wires a topology into it).

Before consuming, the app creates its topics (the broker does not), resolves the
schema ids of what it encodes (encoding is synchronous) and, at each assignment,
bulk-restores its RocksDB tables from their changelogs (pipeline.engine.restore). Each
agent becomes a Faust agent over its source topics, read as raw bytes and handled in
batches by the runtime (pipeline.streaming.processing); each table a Faust table of raw
bytes (pipeline.engine.tables).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import faust
from faust.types import TP, StreamT, TableT
from faust.types.auth import CredentialsT

from pipeline import preflight
from pipeline.engine.copies import StateCleaner
from pipeline.engine.fast_path import ArrivedEvents, RawSchema
from pipeline.engine.fixes import FixedFaustApp, PipelineTableManager
from pipeline.engine.lag import read_lags
from pipeline.engine.membership import group_member
from pipeline.engine.restore import ChangelogStore, restore
from pipeline.engine.store import FaustPartitionStore
from pipeline.engine.tables import faust_table
from pipeline.engine.web import FaustWorker
from pipeline.kafka.offsets import EndOffsets
from pipeline.kafka.topics import admin_client, ensure_topics
from pipeline.serde.codec import Codecs
from pipeline.settings import KafkaSecurity, Settings
from pipeline.streaming import garbage_collection
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, GroupMember
from pipeline.streaming.producer import BatchProducer
from pipeline.streaming.read_in_step import ReadInStep
from pipeline.streaming.timers import repeat
from pipeline.streaming.topology import RuleBug, Topology
from pipeline.streaming.transactions import (
    ExactlyOnce,
    check_group_metadata,
    wait_for_stable_offsets,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerClients:
    """The clients a worker's app is made with, and closes at its shutdown."""

    codecs: Codecs
    # Ingest (POSTs); under at-least-once the agents' outputs and dead letters too.
    producer: BatchProducer
    end_offsets: EndOffsets


class PipelineApp(FixedFaustApp):
    """A Faust app that, before consuming, creates its topics and resolves its schema
    ids, and at each assignment bulk-restores the table partitions it was assigned."""

    topology: Topology
    # Its clients (``WorkerClients``).
    codecs: Codecs
    batch_producer: BatchProducer
    end_offsets: EndOffsets
    pipeline_metrics: Metrics
    # exactly_once only: the worker's transactions.
    transactions: ExactlyOnce | None = None
    pipeline_tables: dict[str, TableT[bytes, bytes]]
    # Called as a rebalance starts and once it ended (``on_rebalance``).
    rebalance_callbacks: list[Callable[[], None]]
    partition_stores: dict[str, FaustPartitionStore]

    @property
    def pipeline_settings(self) -> Settings:
        return self.topology.settings

    async def on_first_start(self) -> None:
        # Blocking admin calls, once per process, before any consumer or producer runs.
        topology = self.topology
        # A wrong CA file, a hostname not in a certificate, a plaintext client at a TLS
        # listener: said now, with the setting to fix, rather than retried for ever.
        await asyncio.to_thread(preflight.check, topology.settings)
        await asyncio.to_thread(ensure_topics, topology.settings, topology.specs())
        await self.codecs.prepare_async(topology.encoded_topics)
        if self.transactions is not None:
            settings = topology.settings
            await asyncio.to_thread(
                check_group_metadata,
                settings.kafka_client_config(),
                settings.app_id,
                settings.worker_id,
            )
            await self.transactions.start()
        await super().on_first_start()
        garbage_collection.PauseTimer(self.pipeline_metrics.gc_pauses).install()
        garbage_collection.settle()

    def on_rebalance_start(self) -> None:
        # Called from the consumer's thread, as soon as the group starts rebalancing.
        self.pipeline_metrics.rebalance_started()
        self._rebalanced()
        super().on_rebalance_start()

    def on_rebalance_end(self) -> None:
        # Once the tables are recovered and the streams resumed.
        self._rebalanced()
        super().on_rebalance_end()
        self.pipeline_metrics.rebalance_ended()

    def _rebalanced(self) -> None:
        for callback in self.rebalance_callbacks:
            callback()

    async def on_shutdown(self) -> None:
        # After the agents stopped: deliver what their last batches queued.
        if self.transactions is not None:
            await self.transactions.close()
            await asyncio.to_thread(self.transactions.producer.close)
        await asyncio.to_thread(self.batch_producer.close)
        await asyncio.to_thread(self.end_offsets.close)
        await super().on_shutdown()

    async def restore_assigned(self, partitions: set[TP]) -> None:
        """Bulk-restore the assigned changelog partitions (active and standby) that are
        behind their changelog; called by the recovery before Faust's own. Under
        exactly_once, first wait for a commit in doubt on the assigned partitions to
        settle (``wait_for_stable_offsets``): before the tables are read and the committed
        offsets are fetched."""
        tables = {table.changelog_topic.get_topic_name(): table for table in self.tables.values()}
        if self.transactions is not None:
            sources = {(tp.topic, tp.partition) for tp in partitions if tp.topic not in tables}
            await asyncio.to_thread(self._wait_for_stable_offsets, sources)
        if not self.pipeline_settings.store.startswith("rocksdb://"):
            return
        assigned = {(tp.topic, tp.partition) for tp in partitions if tp.topic in tables}
        if not assigned:
            return
        # The stores are created here, on the loop; the bulk reads and writes run off it.
        stores = {topic: cast(ChangelogStore, table.data) for topic, table in tables.items()}
        report = await asyncio.to_thread(restore, self.pipeline_settings, stores, assigned)
        restored = self.pipeline_metrics.changelog_records_restored
        for topic, records in report.records.items():
            restored.labels(tables[topic].name).inc(records)

    def _wait_for_stable_offsets(self, partitions: set[tuple[str, int]]) -> None:
        admin = admin_client(self.pipeline_settings)
        wait_for_stable_offsets(admin, self.pipeline_settings.app_id, partitions)

    def partition_store(self, table: str) -> FaustPartitionStore:
        """The table's partitions as the runtime reads and writes them (one per table)."""
        store = self.partition_stores.get(table)
        if store is None:
            store = self.partition_stores[table] = FaustPartitionStore(self.pipeline_tables[table])
        return store

    def run_agent(
        self, name: str, topics: Sequence[str], consume: Callable[[Arrivals], Awaitable[None]]
    ) -> None:
        """A Faust agent over ``topics``, read as raw bytes, whose stream ``consume``
        takes in batches."""
        source = self.topic(*topics, schema=RawSchema())

        async def process(stream: StreamT[Any]) -> None:
            try:
                await consume(ArrivedEvents(stream))
            except RuleBug as bug:
                # A bug in the service's rules: the worker stops (exit 1), rather than
                # dead-letter every event or restart the agent into the same error.
                log.critical("agent %s stopped the worker: %s", name, bug)
                await self.crash(bug)

        self.agent(source, name=name)(process)

    def on_rebalance(self, callback: Callable[[], None]) -> None:
        self.rebalance_callbacks.append(callback)

    def every(self, interval_s: float, task: Callable[[], Awaitable[None]]) -> None:
        """Run ``task`` on its schedule (pipeline.streaming.timers) as a Faust app task."""

        async def run_periodically() -> None:
            await repeat(interval_s, task)

        self.task(run_periodically)

    def group_member(self) -> GroupMember | None:
        return group_member(self)

    def commit_in(self, transactions: ExactlyOnce) -> None:
        """Settle in ``transactions``, which commit the consumer's offsets: before the app
        starts, so that its consumer reads committed records only and Faust commits
        nothing."""
        self.transactions = transactions
        self.commits_in_transactions = True

    def served(self) -> FaustWorker:
        """This worker as its web side sees it."""
        return FaustWorker(self, self.pipeline_tables, self.pipeline_settings.partitions)


def broker_credentials(security: KafkaSecurity) -> CredentialsT | ssl.SSLContext | None:
    """Faust's (aiokafka's) form of the security librdkafka gets from
    ``KafkaSecurity.confluent_config``: the same protocol, login and trusted CAs
    (``KafkaSecurity.tls``), the hostname checked by both."""
    if security.protocol == "PLAINTEXT":
        return None
    context = security.tls.context() if security.tls is not None else None
    if security.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    return context


def faust_app(topology: Topology, clients: WorkerClients) -> PipelineApp:
    """The Faust app of ``topology``'s settings and ``clients``, with no agent in it yet."""
    settings = topology.settings
    brokers = [
        f"kafka://{server.strip()}" for server in settings.kafka_bootstrap_servers.split(",")
    ]
    app = PipelineApp(
        settings.app_id,
        broker=brokers,
        broker_credentials=broker_credentials(settings.kafka_security),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        # Faust's exactly_once derives each transactional id from the destination topic's
        # partition and fails for topics the app does not consume (all our derived topics):
        # ours is pipeline.streaming.transactions, and Faust's own stays at-least-once.
        processing_guarantee="at_least_once",
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        # Faust's own /router and /table views: queries route through our views instead,
        # and /table would expose raw rows.
        web_router_enabled=False,
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        # Records handed out per fetch (Kafka's max.poll.records; Faust's default: a whole
        # fetch of each partition). The reads in step are as fine as this.
        broker_max_poll_records=500,
        # A crashed worker's partitions wait for its session to expire before they
        # move (Faust's default: 60 s).
        broker_session_timeout=15.0,
        # Static membership when set: no LeaveGroup at shutdown, and a restart with the
        # same id within the session timeout takes back its partitions without a rebalance.
        consumer_group_instance_id=settings.worker_id,
        producer_acks=-1,
        # Resumes the streams after a rebalance without dropping fetched events
        # (pipeline.engine.fixes: Faust's own order loses some and stops committing).
        TableManager=PipelineTableManager,
        autodiscover=False,
    )
    app.topology = topology
    app.codecs = clients.codecs
    app.batch_producer = clients.producer
    app.end_offsets = clients.end_offsets
    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.read_in_step = ReadInStep(topology.in_step, settings.join_in_step_max_wait_ms / 1000)
    metrics = app.pipeline_metrics = Metrics()
    metrics.lags.read = lambda: read_lags(app)
    app.rebalance_callbacks = []
    app.partition_stores = {}
    app.pipeline_tables = {
        spec.name: faust_table(app, settings, metrics, spec) for spec in topology.tables
    }
    if settings.store.startswith("rocksdb://"):
        cleaner = StateCleaner(
            app, app.pipeline_tables, settings.partitions, settings.state_cleanup_delay_s
        )
        interval = max(1.0, min(30.0, settings.state_cleanup_delay_s / 2))

        async def remove_copies_no_longer_held() -> None:
            cleaner.sweep()

        app.every(interval, remove_copies_no_longer_held)
    return app
