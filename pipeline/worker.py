"""The composition root: a topology wired into the Faust app a worker runs, with the runtime
(agents' handlers, the processing guarantee's settlement), the engine (pipeline.engine)
and the web side (pipeline.web.server). ``pipeline.app`` and ``pipeline.points_app`` are
its two services. Past the engine's construction, the runtime reaches it only through
its ports (``WorkerEngine``, pipeline.streaming.ports).

How batches settle is the processing guarantee's: under exactly_once, into the worker's
Kafka transactions, committed by the engine's timer every commit interval
(pipeline.streaming.transactions), with Faust's own commits off and its consumer reading
committed records only; under at_least_once, in the order pipeline.streaming.processing
describes.
"""

from __future__ import annotations

from pipeline.engine.app import PipelineApp, WorkerClients, faust_app
from pipeline.kafka.offsets import EndOffsets
from pipeline.serde.codec import Codecs
from pipeline.streaming.agents import Serdes
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.handlers import run_agents
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import WorkerEngine
from pipeline.streaming.processing import AtLeastOnce, Settlement
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
    clients = WorkerClients(
        codecs if codecs is not None else Codecs.from_settings(settings),
        BatchProducer(producer_config(settings)),
        EndOffsets(settings.kafka_client_config()),
    )
    app = faust_app(topology, clients)
    metrics = app.pipeline_metrics
    dead_letters = DeadLetters(clients.producer, settings.app_id)
    settlement: Settlement
    if exactly_once:
        settlement = in_transactions(app, topology, dead_letters, metrics)
        app.commit_in(settlement)
    else:
        settlement = AtLeastOnce(clients.producer, dead_letters)
    serdes = Serdes(records=clients.codecs, internal=topology.internal, topology=topology)
    run_agents(app, topology, settlement, serdes, metrics)
    server.register(
        app.served(), topology, clients.codecs, metrics, clients.producer, clients.end_offsets
    )
    return app


def in_transactions(
    engine: WorkerEngine, topology: Topology, dead_letters: DeadLetters, metrics: Metrics
) -> ExactlyOnce:
    """The worker's Kafka transactions, fenced by the engine's group membership and
    committed by its timer every commit interval."""
    settings = topology.settings
    transactions = ExactlyOnce(
        TransactionalProducer(transactional_config(settings)),
        dead_letters,
        engine.group_member,
        metrics,
        topology.readers,
    )
    engine.every(settings.commit_interval_ms / 1000, transactions.commit)
    return transactions
