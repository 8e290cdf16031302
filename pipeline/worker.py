"""The composition root: a topology wired into the Faust app a worker runs, with the runtime
(agents' handlers, the processing guarantee's settlement), the engine (pipeline.engine)
and the web side (pipeline.web.server). ``pipeline.app`` and ``pipeline.points_app`` are
its two services.

How batches settle is the processing guarantee's: under exactly_once, into the worker's
Kafka transactions, committed by a task every commit interval
(pipeline.streaming.transactions), with Faust's own commits off and its consumer reading
committed records only; under at_least_once, in the order pipeline.streaming.processing
describes.
"""

from __future__ import annotations

from pipeline.engine.app import PipelineApp, faust_app
from pipeline.kafka.offsets import EndOffsets
from pipeline.serde.codec import Codecs
from pipeline.streaming.agents import Outputs, Serdes
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.handlers import handler_for, quiet_closing
from pipeline.streaming.processing import AtLeastOnce, EventRunner, Settlement
from pipeline.streaming.producer import BatchProducer, producer_config
from pipeline.streaming.topology import Topology
from pipeline.streaming.transactions import ExactlyOnce, TransactionalProducer, transactional_config
from pipeline.web import server


class UnsupportedGuarantee(ValueError):
    pass


def create_app(topology: Topology, codecs: Codecs | None = None) -> PipelineApp:
    """The Faust app of ``topology``; nothing is started until a worker runs it."""
    settings = topology.settings
    exactly_once = settings.processing_guarantee == "exactly_once"
    if exactly_once and not settings.store.startswith("rocksdb://"):
        # Faust's recovery of a memory:// table reads the changelog up to its end, which
        # is a transaction marker: it would wait for ever for a record that never comes.
        # (The bulk restore of RocksDB tables, pipeline.engine.restore, accounts for it.)
        raise UnsupportedGuarantee(
            "PIPELINE_PROCESSING_GUARANTEE=exactly_once needs PIPELINE_STORE=rocksdb://"
        )
    topology.check()
    app = faust_app(topology)
    app.codecs = codecs if codecs is not None else Codecs.from_settings(settings)
    metrics = app.pipeline_metrics
    app.batch_producer = BatchProducer(producer_config(settings))
    dead_letters = DeadLetters(app.batch_producer, settings.app_id)
    settlement: Settlement
    if exactly_once:
        app.commits_in_transactions = True
        transactions = app.transactions = ExactlyOnce(
            TransactionalProducer(transactional_config(settings)),
            dead_letters,
            app.group_member,
            metrics,
            topology.readers,
        )

        async def commit_transactions() -> None:
            await transactions.run(settings.commit_interval_ms / 1000)

        app.run_task(commit_transactions)
        settlement = transactions
    else:
        settlement = AtLeastOnce(app.batch_producer, dead_letters)
    serdes = Serdes(records=app.codecs, internal=topology.internal, topology=topology)
    outputs = Outputs(settlement=settlement, metrics=metrics)
    for agent in topology.agents:
        store = app.partition_store(agent.table.name) if agent.table is not None else None
        handler = handler_for(agent, store, serdes, outputs, metrics)
        if handler.cache is not None:
            app.row_caches.append(handler.cache)
        runner = EventRunner(
            agent.name,
            settlement=settlement,
            metrics=metrics,
            max_batch=settings.max_batch_events,
            quiet=quiet_closing(handler, settings),
        )
        app.run_agent(agent, handler, runner)
    app.end_offsets = EndOffsets(settings.kafka_client_config())
    server.register(
        app.served(), topology, app.codecs, metrics, app.batch_producer, app.end_offsets
    )
    return app
