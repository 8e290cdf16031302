"""The Faust app: the whole topology, wired in one place.

    faust -A pipeline.app worker -l info

    user_registered ──notifications──▶ notifications
    order_created ──orders──▶ [user_order_stats table] ──▶ user_order_stats
                          └─▶ <app_id>-order_lines_by_sku (re-keyed by SKU) ─┐
    stock_adjusted ─────────────────────────────────────────────────stock──┴▶ [stock table]
                                                          ──▶ stock_levels, low_stock_alerts
    anything that cannot be processed ──▶ <source topic>.dlq

Settings come from the environment (pipeline.settings); topics are created at
start-up when missing (pipeline.topics); RocksDB tables are bulk-restored from
their changelogs before consuming (pipeline.streaming.restore).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import cast

import faust
from faust.types.auth import CredentialsT
from faust.types.transports import TransportT

from pipeline.admin.topics import ensure_topics
from pipeline.agents import notifications, orders, stock
from pipeline.serde.codec import Codecs
from pipeline.settings import KafkaSecurity, Settings
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.faust_internals import PipelineTableManager, new_transport
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.outputs import Outputs
from pipeline.streaming.processing import EventRunner
from pipeline.streaming.producer import BatchProducer, producer_config
from pipeline.streaming.restore import ChangelogStore, restore
from pipeline.streaming.tables import define_tables
from pipeline.topics import TopicNames
from pipeline.web import server as web


class PipelineApp(faust.App):
    """A Faust app that, before consuming, creates its topics (the broker does not),
    resolves its schema ids (encoding is synchronous) and bulk-restores its tables."""

    pipeline_settings: Settings
    codecs: Codecs
    pipeline_metrics: Metrics
    batch_producer: BatchProducer

    async def on_first_start(self) -> None:
        # Blocking admin calls, once per process, before any consumer or producer runs.
        settings = self.pipeline_settings
        await asyncio.to_thread(ensure_topics, settings)
        await self.codecs.prepare_async()
        if settings.store.startswith("rocksdb://"):
            await self.restore_tables()
        await super().on_first_start()

    async def on_shutdown(self) -> None:
        # After the agents stopped: deliver what their last batches queued.
        await asyncio.to_thread(self.batch_producer.close)
        await super().on_shutdown()

    async def restore_tables(self) -> None:
        # The stores are created here, on the loop; the bulk reads and writes run off it.
        tables = {table.changelog_topic.get_topic_name(): table for table in self.tables.values()}
        stores = {topic: cast(ChangelogStore, table.data) for topic, table in tables.items()}
        report = await asyncio.to_thread(restore, self.pipeline_settings, stores)
        restored = self.pipeline_metrics.changelog_records_restored
        for topic, records in report.records.items():
            restored.labels(tables[topic].name).inc(records)

    def _new_transport(self) -> TransportT:
        # Never fetches with an empty partition set (pipeline.streaming.faust_internals:
        # Faust's does, and throws away the records aiokafka then hands back).
        return new_transport(self)


def broker_credentials(security: KafkaSecurity) -> CredentialsT | ssl.SSLContext | None:
    if security.protocol == "PLAINTEXT":
        return None
    context = None
    if security.protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=security.ssl_cafile)
    if security.protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    return context


class UnsupportedGuarantee(ValueError):
    pass


def create_app(settings: Settings, codecs: Codecs | None = None) -> PipelineApp:
    if settings.processing_guarantee != "at_least_once":
        # Faust's exactly_once derives each transactional id from the destination
        # topic's partition and fails for topics the app does not consume (all our
        # derived topics). The tables are exact without it: every row remembers the
        # last source offset it applied (pipeline.domain.rules), so a redelivery is a no-op.
        raise UnsupportedGuarantee(
            f"PIPELINE_PROCESSING_GUARANTEE={settings.processing_guarantee!r} is not supported: "
            "use at_least_once; table updates are idempotent, so replays never double-count"
        )
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
        processing_guarantee=settings.processing_guarantee,
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.web_url,
        # Faust's own /router and /table views: queries route through our views instead,
        # and /table would expose raw rows.
        web_router_enabled=False,
        web_tables_enabled=False,
        consumer_auto_offset_reset="earliest",
        # A crashed worker's partitions wait for its session to expire before they
        # move (Faust's default: 60 s).
        broker_session_timeout=15.0,
        producer_acks=-1,
        # Resumes the streams after a rebalance without dropping fetched events
        # (pipeline.streaming.faust_internals: Faust's own order loses some and stops committing).
        TableManager=PipelineTableManager,
        autodiscover=False,
    )
    app.pipeline_settings = settings
    app.codecs = codecs if codecs is not None else Codecs.from_settings(settings)

    names = TopicNames.from_settings(settings)
    metrics = app.pipeline_metrics = Metrics()
    tables = define_tables(app, settings, metrics)
    app.batch_producer = BatchProducer(producer_config(settings))
    outputs = Outputs(producer=app.batch_producer, codec=app.codecs, names=names, metrics=metrics)
    runner = EventRunner(dead_letters=DeadLetters(app.batch_producer), metrics=metrics)

    notifications.register(app, outputs, runner)
    orders.register(app, outputs, tables, runner)
    stock.register(app, outputs, tables, runner, settings.low_stock_threshold)
    web.register(
        app,
        tables=tables,
        names=names,
        codecs=app.codecs,
        metrics=metrics,
        partitions=settings.partitions,
        settings=settings,
    )
    return app


app = create_app(Settings.from_env())
