"""The agent API: what a service declares, and nothing of how it is run.

An agent module says which topics its agent reads, which table it keeps, the pure
rule it applies to each source topic's events and which topics it emits to::

    orders = topology.agent("orders", table=USER_STATS, emits=[topics.user_order_stats])

    @orders.on(topics.order_created)
    def order(user_id: str, order: Order, stats: UserOrderStats | None) -> Update[UserOrderStats]:
        updated = apply_order(stats, order)
        return Update(updated, emit=[Emit(topics.user_order_stats, user_id, {...})])

A rule gets the event's key (text), its decoded value and, for an agent with a
table, the key's row (None when the table has none); it returns the new row and
the events to emit (``Update``), or, without a table, only the events. mypy checks
each rule's shape against its agent (``TableRule``, ``StreamRule``) and what it emits: a
record (``Emit``, an ``AvroRecord``) to a topic with a schema, a value of an internal
topic's own type through that topic's ``emit`` (``Rekeyed``). Emitting to a
topic the agent does not declare stops the worker: a bug, not a bad event. The runtime
(pipeline.streaming.agents) does the rest: decoding (awaiting unknown schema ids),
batches, binding each row to its partition, skipping replays, sending derived
events before the changelog and the changelog before the store, retries and dead
letters, and each emitted value's serde, chosen by its topic: Avro in Confluent
wire format for a topic with a schema, the topic's own encoding for an internal
one (``repartition``).

One agent may read several topics (the stock agent reads order lines and
adjustments): they share one batch pipeline, so every change of a row goes through
the same in-flight state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from pipeline.kafka.naming import TopicNaming, TopicSpec
from pipeline.settings import Settings
from pipeline.streaming.event_time import KAFKA_TIMESTAMP, EventTime
from pipeline.streaming.joined import Joined, JoinedCodec
from pipeline.streaming.windowing import Hopping, Panes, Window, WindowedRows

Row = TypeVar("Row")
Value = TypeVar("Value")


class RuleBug(Exception):
    """A bug in a service's rules, not in an event: it stops the worker, as no retry and
    no dead letter would fix it."""


class UndeclaredTopic(RuleBug, ValueError):
    """A rule emitted to a topic its agent does not declare (a bug in the rule)."""


# A record of a topic's Avro schema: its fields' values by name, as the topic's codec
# encodes them (it refuses, as a dead letter, what the schema does not allow).
AvroRecord = Mapping[str, object]


@dataclass(frozen=True)
class Emit:
    """An event to emit to a topic with a schema: its topic, its key (text; the partition
    follows from it) and its record."""

    topic: str
    key: str
    value: AvroRecord


@dataclass(frozen=True)
class Rekeyed(Generic[Value]):
    """An event to emit to an internal topic, made by its ``InternalTopic.emit``: mypy
    checks that ``value`` is what the topic encodes."""

    topic: str
    key: str
    value: Value


# What a rule emits: records to topics with a schema, values to internal topics.
Emitted = Emit | Rekeyed[Any]


@dataclass(frozen=True)
class Update(Generic[Row]):
    """What a rule makes of one event: the key's new row, and the events it emits."""

    row: Row
    emit: Sequence[Emitted] = ()


@dataclass(frozen=True)
class TableSpec(Generic[Row]):
    """A table keyed by the source events' keys, with rows stored as ``encode`` makes them."""

    name: str
    encode: Callable[[Row], bytes]
    decode: Callable[[bytes], Row]
    help: str


@dataclass(frozen=True)
class InternalTopic(Generic[Value]):
    """A topic only this service writes and reads: events re-keyed from one agent to
    another, encoded without a registry. ``decode`` gets the record key too."""

    name: str
    encode: Callable[[Value], bytes]
    decode: Callable[[str, bytes], Value]

    def emit(self, key: str, value: Value) -> Rekeyed[Value]:
        """``value`` to emit to this topic, keyed by ``key``."""
        return Rekeyed(self.name, key, value)


# A rule with a table: (key, value, the key's row or None) -> the new row and its events.
TableRule = Callable[[str, Any, Row | None], Update[Row]]
# A rule without one: (key, value) -> the events it emits.
StreamRule = Callable[[str, Any], Sequence[Emitted]]
# A join's stream-side rule: (key, value, the key's table row) -> the events it emits.
JoinRule = Callable[[str, Any, Row], Sequence[Emitted]]
Rule = TypeVar("Rule", bound=Callable[..., Any])


@dataclass
class Agent:
    """One agent: its source topics with a rule each, its table, the topics it emits to.

    Made by ``Topology.agent``: a ``TableAgent`` or a ``StreamAgent``, whose ``on`` checks
    the rule's shape (mypy)."""

    name: str
    table: TableSpec[Any] | None
    emits: frozenset[str]
    rules: dict[str, Callable[..., Any]] = field(default_factory=dict)
    # Its events' event time, which the records they cause carry as their Kafka timestamp.
    event_time: EventTime = field(default=KAFKA_TIMESTAMP, kw_only=True)

    def _register(self, topic: str, rule: Rule) -> Rule:
        if topic in self.rules:
            raise ValueError(f"agent {self.name!r} already has a rule for topic {topic!r}")
        self.rules[topic] = rule
        return rule


@dataclass
class TableAgent(Agent, Generic[Row]):
    """An agent keeping a table of ``Row``s."""

    def on(self, topic: str) -> Callable[[TableRule[Row]], TableRule[Row]]:
        """Apply the decorated rule to every event of ``topic``."""
        return lambda rule: self._register(topic, rule)


@dataclass
class StreamAgent(Agent):
    """An agent without a table: each event becomes the events its rule emits."""

    def on(self, topic: str) -> Callable[[StreamRule], StreamRule]:
        """Apply the decorated rule to every event of ``topic``."""
        return lambda rule: self._register(topic, rule)


@dataclass(frozen=True)
class HoldBound:
    """How much of a join's stream one key may hold while its table row is absent: at most
    ``max_records`` records, none older in event time than ``max_age_ms`` behind the
    key's latest event. A record beyond either goes to its dead-letter topic."""

    max_records: int
    max_age_ms: int


@dataclass
class JoinAgent(Agent, Generic[Row]):
    """A stream-table join: a table of ``Row``s kept from its table topics, read while
    its stream topics (co-partitioned with them) are processed. A stream record whose key
    has no row yet is held, in the table's store, until the row arrives; then it is
    released, in the order of its arrival. The agent's ``table`` stores ``Joined`` rows."""

    row_table: TableSpec[Row] = field(kw_only=True)
    hold: HoldBound = field(kw_only=True)
    stream_rules: dict[str, JoinRule[Row]] = field(default_factory=dict, kw_only=True)

    def on_table(self, topic: str) -> Callable[[TableRule[Row]], TableRule[Row]]:
        """Keep the table's rows with the decorated rule, applied to every event of
        ``topic``; it may emit events too."""
        return lambda rule: self._register(topic, rule)

    def on_stream(self, topic: str) -> Callable[[JoinRule[Row]], JoinRule[Row]]:
        """Apply the decorated rule to every event of ``topic`` with its key's row, once
        the table has one."""

        def register(rule: JoinRule[Row]) -> JoinRule[Row]:
            self.stream_rules[topic] = self._register(topic, rule)
            return rule

        return register


def joined_table(table: TableSpec[Row]) -> TableSpec[Joined[Row]]:
    """The table a join stores: ``table``'s rows, or the records held for want of one."""
    codec = JoinedCodec(table.encode, table.decode)
    return TableSpec(table.name, codec.encode, codec.decode, table.help)


@dataclass(frozen=True)
class View(Generic[Row]):
    """``GET path`` answers the row of the key in the path's one ``{parameter}``."""

    path: str
    table: TableSpec[Row]
    render: Callable[[str, Row], Mapping[str, Any]]

    @property
    def parameter(self) -> str:
        return self.path[self.path.index("{") + 1 : self.path.index("}")]


# A windowed agent's rule: (key, value, one of the event's windows, its row or None) ->
# the window's new row.
WindowRule = Callable[[str, Any, Window, Row | None], Row]
# Its close hook: (key, the window, its final row) -> the events to emit.
CloseHook = Callable[[str, Window, Row], Sequence[Emitted]]


@dataclass
class WindowedAgent(Agent, Generic[Row]):
    """An agent keeping a windowed table of ``Row``s (pipeline.streaming.windows runs it):
    its rule updates each window an event falls in; ``on_close`` says what a window
    emits once it closed. Its ``table`` stores the windows, clocks and index entries
    (pipeline.streaming.windowing)."""

    windows: Hopping = field(kw_only=True)
    row_table: TableSpec[Row] = field(kw_only=True)
    close_hook: CloseHook[Row] | None = field(default=None, kw_only=True)
    # Rows kept per pane, merged into windows (docs/windows.md, "Panes"); None: per window.
    panes: Panes[Row] | None = field(default=None, kw_only=True)

    def on(self, topic: str) -> Callable[[WindowRule[Row]], WindowRule[Row]]:
        """Apply the decorated rule to every window of every event of ``topic`` (with
        panes: to the event's pane, once)."""
        return lambda rule: self._register(topic, rule)

    def on_close(self, hook: CloseHook[Row]) -> CloseHook[Row]:
        """Call the decorated hook with each window's final row once the window closed;
        what it returns is emitted, stamped with the window's last millisecond."""
        if self.close_hook is not None:
            raise ValueError(f"windowed agent {self.name!r} already has a close hook")
        self.close_hook = hook
        return hook


@dataclass(frozen=True)
class WindowView(Generic[Row]):
    """``GET path?from=&to=`` answers the windows of the key in the path's one
    ``{parameter}`` whose start is in ``[from, to)``, each rendered by ``render``."""

    path: str
    agent: WindowedAgent[Row]
    render: Callable[[Row], Mapping[str, Any]]

    @property
    def parameter(self) -> str:
        return self.path[self.path.index("{") + 1 : self.path.index("}")]


@dataclass(frozen=True)
class IngestRoute:
    """``POST path`` produces its JSON body to ``topic``, keyed by the body's ``key_field``."""

    path: str
    topic: str
    key_field: str


class Topology:
    """Everything one service (one Faust app, one consumer group) declares."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = TopicNaming.from_settings(settings)
        self.agents: list[Agent] = []
        self.internal: dict[str, InternalTopic[Any]] = {}
        self.views: list[View[Any]] = []
        self.window_views: list[WindowView[Any]] = []
        self.ingest_routes: list[IngestRoute] = []

    @overload
    def agent(
        self,
        name: str,
        *,
        table: TableSpec[Row],
        emits: Iterable[str] = (),
        event_time: EventTime = KAFKA_TIMESTAMP,
    ) -> TableAgent[Row]: ...

    @overload
    def agent(
        self,
        name: str,
        *,
        table: None = None,
        emits: Iterable[str] = (),
        event_time: EventTime = KAFKA_TIMESTAMP,
    ) -> StreamAgent: ...

    def agent(
        self,
        name: str,
        *,
        table: TableSpec[Any] | None = None,
        emits: Iterable[str] = (),
        event_time: EventTime = KAFKA_TIMESTAMP,
    ) -> Agent:
        """An agent reading its events' event time as ``event_time`` says (by default
        their Kafka timestamp)."""
        agent: Agent = (
            StreamAgent(name, None, frozenset(emits), event_time=event_time)
            if table is None
            else TableAgent(name, table, frozenset(emits), event_time=event_time)
        )
        self.agents.append(agent)
        return agent

    def windowed(
        self,
        name: str,
        *,
        table: TableSpec[Row],
        windows: Hopping,
        event_time: EventTime = KAFKA_TIMESTAMP,
        emits: Iterable[str] = (),
        combine: Callable[[Row, Row], Row] | None = None,
    ) -> WindowedAgent[Row]:
        """An agent keeping ``table``'s rows per key and window (``Tumbling`` or
        ``Hopping``), in the event time ``event_time`` reads. With ``combine`` (an
        associative merge of two rows, of an aggregate whose order does not matter), rows
        are kept per key and pane and merged into windows when read (docs/windows.md,
        "Panes"): one row update per event instead of size/step."""
        rows = WindowedRows(table.encode, table.decode, paned=combine is not None)
        stored: TableSpec[Any] = TableSpec(table.name, rows.encode, rows.decode, table.help)
        agent = WindowedAgent(
            name,
            stored,
            frozenset(emits),
            event_time=event_time,
            windows=windows,
            row_table=table,
            panes=Panes(windows, combine) if combine is not None else None,
        )
        self.agents.append(agent)
        return agent

    def join(
        self,
        name: str,
        *,
        table: TableSpec[Row],
        emits: Iterable[str] = (),
        hold: HoldBound | None = None,
        event_time: EventTime = KAFKA_TIMESTAMP,
    ) -> JoinAgent[Row]:
        """A stream-table join (``JoinAgent``) keeping ``table``; held records are bounded by
        ``hold``, by default the settings' (``join_hold_max_records``,
        ``join_hold_max_age_ms``), their age in the event time ``event_time`` reads."""
        bound = hold or HoldBound(
            self.settings.join_hold_max_records, self.settings.join_hold_max_age_ms
        )
        agent = JoinAgent(
            name,
            joined_table(table),
            frozenset(emits),
            event_time=event_time,
            row_table=table,
            hold=bound,
        )
        self.agents.append(agent)
        return agent

    def repartition(
        self, name: str, encode: Callable[[Value], bytes], decode: Callable[[str, bytes], Value]
    ) -> InternalTopic[Value]:
        """Declare an internal topic ``<app id>-<name>`` and how its values are encoded."""
        topic = InternalTopic(self.topics.internal(name), encode, decode)
        self.internal[topic.name] = topic
        return topic

    def view(
        self, path: str, table: TableSpec[Row], render: Callable[[str, Row], Mapping[str, Any]]
    ) -> None:
        self.views.append(View(path, table, render))

    def window_view(
        self, path: str, agent: WindowedAgent[Row], render: Callable[[Row], Mapping[str, Any]]
    ) -> None:
        self.window_views.append(WindowView(path, agent, render))

    def ingest(self, path: str, topic: str, key_field: str) -> None:
        self.ingest_routes.append(IngestRoute(path, topic, key_field))

    @property
    def tables(self) -> list[TableSpec[Any]]:
        return [agent.table for agent in self.agents if agent.table is not None]

    @property
    def encoded_topics(self) -> list[str]:
        """Topics this service writes Avro records to (emitted or ingested)."""
        emitted = {topic for agent in self.agents for topic in agent.emits}
        emitted |= {route.topic for route in self.ingest_routes}
        return sorted(emitted - self.internal.keys())

    @property
    def readers(self) -> dict[str, frozenset[str]]:
        """Each source topic, and the agents that read it."""
        readers: dict[str, set[str]] = {}
        for agent in self.agents:
            for topic in agent.rules:
                readers.setdefault(topic, set()).add(agent.name)
        return {topic: frozenset(names) for topic, names in readers.items()}

    @property
    def in_step(self) -> list[frozenset[str]]:
        """The topics of each join (its table's and its stream's, co-partitioned), read in
        step by record timestamp (pipeline.streaming.read_in_step)."""
        return [frozenset(agent.rules) for agent in self.agents if isinstance(agent, JoinAgent)]

    @property
    def sources(self) -> list[str]:
        """Every topic an agent reads, once; each has a dead-letter topic."""
        return list(dict.fromkeys(topic for agent in self.agents for topic in agent.rules))

    def check(self) -> None:
        """Refuse a topology the runtime cannot run correctly, naming what is wrong."""
        for agent in self.agents:
            if not agent.rules:
                raise ValueError(f"agent {agent.name!r} has no rule: add one with @agent.on(topic)")
            # A re-keyed event carries its origin's position; re-keying it again would
            # need a position made of both, which nothing here keeps.
            rekeyed = [topic for topic in agent.rules if topic in self.internal]
            rekeying = [topic for topic in agent.emits if topic in self.internal]
            if rekeyed and rekeying:
                raise ValueError(
                    f"agent {agent.name!r} reads the internal topic {rekeyed[0]!r} and emits to "
                    f"the internal topic {rekeying[0]!r}: one re-keying hop is supported"
                )
            if isinstance(agent, JoinAgent) and (
                not agent.stream_rules or len(agent.stream_rules) == len(agent.rules)
            ):
                raise ValueError(
                    f"join {agent.name!r} needs a rule for its table (@join.on_table) and "
                    "one for its stream (@join.on_stream)"
                )
            if isinstance(agent, WindowedAgent) and rekeying:
                # A final belongs to no one event, so it has no position to carry.
                raise ValueError(
                    f"windowed agent {agent.name!r} emits to the internal topic "
                    f"{rekeying[0]!r}: a window's final cannot be re-keyed"
                )
            for topic in agent.rules:
                if topic.startswith(f"{self.settings.app_id}-") and topic not in self.internal:
                    raise ValueError(
                        f"agent {agent.name!r} reads {topic!r}, which no repartition() declares"
                    )

    def specs(self) -> list[TopicSpec]:
        """Every topic the service needs: sources, emitted topics, changelogs, dead letters.

        A table's changelog and the topics its agent reads are co-partitioned: a row's
        changelog record goes to the partition of the event that changed it. Tables whose
        agents share a source topic are co-partitioned with each other through it: one
        group, named after the first of them.
        """
        groups = self._copartition_groups()
        specs: dict[str, TopicSpec] = {}

        def add(spec: TopicSpec) -> None:
            known = specs.get(spec.name)
            if known is None or known.copartition_group is None:
                specs[spec.name] = spec

        for agent in self.agents:
            group = groups[agent.table.name] if agent.table is not None else None
            for topic in agent.rules:
                add(TopicSpec(topic, group))
                add(TopicSpec(self.topics.dead_letters(topic)))
            for topic in agent.emits:
                add(TopicSpec(topic))
            if agent.table is not None:
                add(TopicSpec(self.topics.changelog(agent.table.name), group, compacted=True))
        for route in self.ingest_routes:
            add(TopicSpec(route.topic))
        return list(specs.values())

    def _copartition_groups(self) -> dict[str, str]:
        """Each table's co-partitioning group: the first table, in declaration order, that
        it shares a source topic with, directly or through other tables."""
        group_of: dict[str, str] = {}  # table -> the first table of its group
        readers: dict[str, str] = {}  # source topic -> a table whose agent reads it
        for agent in self.agents:
            if agent.table is None:
                continue
            tables = list(group_of)  # declaration order
            shared = {group_of[readers[topic]] for topic in agent.rules if topic in readers}
            group = min(shared, key=tables.index) if shared else agent.table.name
            for table, its_group in group_of.items():
                if its_group in shared:
                    group_of[table] = group
            group_of[agent.table.name] = group
            readers.update(dict.fromkeys(agent.rules, agent.table.name))
        return group_of
