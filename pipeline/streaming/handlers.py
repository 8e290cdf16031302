"""The batch handler each kind of agent is run by (pipeline.streaming.processing's
``BatchHandler``), and a service's agents run on an ``Engine``: what a worker and the
test harness both do, so the harness runs a worker's path."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.settings import Settings
from pipeline.streaming.agents import AgentHandler, Outputs, Serdes
from pipeline.streaming.joins import JoinHandler
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, Engine, PartitionStore
from pipeline.streaming.processing import BatchHandler, EventRunner, Quiet, Settlement
from pipeline.streaming.topology import Agent, JoinAgent, Topology, WindowedAgent
from pipeline.streaming.windows import WindowedHandler


@dataclass(frozen=True)
class AgentRun:
    """An agent as ``run_agents`` runs it: its handler, and the runner feeding it."""

    agent: Agent
    handler: AgentHandler
    runner: EventRunner


def run_agents(
    engine: Engine,
    topology: Topology,
    settlement: Settlement,
    serdes: Serdes,
    metrics: Metrics,
    wall_clock: Callable[[], float] = time.time,
) -> list[AgentRun]:
    """Run each of ``topology``'s agents on ``engine``: its handler, over its table's
    partition store, fed in batches by an ``EventRunner`` that settles them with
    ``settlement``; its decoded rows forgotten at each rebalance; a windowed agent's idle
    partitions closed by ``wall_clock`` (seconds since the epoch) where that is set."""
    outputs = Outputs(settlement=settlement, metrics=metrics)
    runs = []
    for agent in topology.agents:
        store = engine.partition_store(agent.table.name) if agent.table is not None else None
        handler = handler_for(agent, store, serdes, outputs, metrics)
        if isinstance(handler, WindowedHandler):
            handler.wall_clock = wall_clock
        if handler.cache is not None:
            engine.on_rebalance(handler.cache.clear)
        runner = EventRunner(
            agent.name,
            settlement=settlement,
            metrics=metrics,
            max_batch=topology.settings.max_batch_events,
            quiet=quiet_closing(handler, topology.settings),
        )
        engine.run_agent(agent.name, list(agent.rules), consumer(runner, handler))
        runs.append(AgentRun(agent, handler, runner))
    return runs


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


def quiet_closing(handler: AgentHandler, settings: Settings) -> Quiet | None:
    """A windowed agent's closing of idle partitions by the wall clock, when it is set
    (``window_idle_close_ms``); None for every other agent."""
    if not settings.window_idle_close_ms or not isinstance(handler, WindowedHandler):
        return None
    return Quiet(settings.window_idle_close_ms / 1000, handler.close_quiet)
