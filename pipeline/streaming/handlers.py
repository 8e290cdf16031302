"""The batch handler each kind of agent is run by (pipeline.streaming.processing's
``BatchHandler``), and a service's agents run on an ``Engine``: what a worker and the
test harness both do, so the harness runs a worker's path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pipeline.streaming.agents import AgentHandler, Outputs, Serdes
from pipeline.streaming.joins import JoinHandler
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, Engine, PartitionStore
from pipeline.streaming.processing import BatchHandler, EventRunner, Settlement
from pipeline.streaming.topology import Agent, JoinAgent, Topology, WindowedAgent
from pipeline.streaming.windows import WindowedHandler


def run_agents(
    engine: Engine, topology: Topology, settlement: Settlement, serdes: Serdes, metrics: Metrics
) -> None:
    """Run each of ``topology``'s agents on ``engine``: its handler, over its table's
    partition store, fed in batches by an ``EventRunner`` that settles them with
    ``settlement``; its decoded rows forgotten at each rebalance."""
    outputs = Outputs(settlement=settlement, metrics=metrics)
    for agent in topology.agents:
        store = engine.partition_store(agent.table.name) if agent.table is not None else None
        handler = handler_for(agent, store, serdes, outputs, metrics)
        if handler.cache is not None:
            engine.on_rebalance(handler.cache.clear)
        runner = EventRunner(
            agent.name,
            settlement=settlement,
            metrics=metrics,
            max_batch=topology.settings.max_batch_events,
        )
        engine.run_agent(agent.name, list(agent.rules), consumer(runner, handler))


def consumer(runner: EventRunner, handler: BatchHandler) -> Callable[[Arrivals], Awaitable[None]]:
    """What consumes an agent's arrivals: ``runner``, with ``handler``."""

    async def consume(arrivals: Arrivals) -> None:
        await runner.consume(arrivals, handler)

    return consume


def handler_for(
    agent: Agent,
    store: PartitionStore | None,
    serdes: Serdes,
    outputs: Outputs,
    metrics: Metrics,
) -> AgentHandler:
    """The handler of ``agent``, over its table's ``store`` (None without a table)."""
    if isinstance(agent, JoinAgent):
        assert store is not None
        return JoinHandler(agent, store, serdes, outputs, metrics)
    if isinstance(agent, WindowedAgent):
        assert store is not None
        return WindowedHandler(agent, store, serdes, outputs, metrics)
    return AgentHandler(agent, store, serdes, outputs, metrics)
