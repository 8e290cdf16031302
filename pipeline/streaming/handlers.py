"""The batch handler each kind of agent is run by (pipeline.streaming.processing's
``BatchHandler``): what a worker and the test harness build for every agent."""

from __future__ import annotations

from pipeline.settings import Settings
from pipeline.streaming.agents import AgentHandler, Outputs, Serdes
from pipeline.streaming.joins import JoinHandler
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import PartitionStore
from pipeline.streaming.processing import Quiet
from pipeline.streaming.topology import Agent, JoinAgent, WindowedAgent
from pipeline.streaming.windows import WindowedHandler


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
