"""A service's agents run in-process, on the runtime's own path, without a broker: the test
harness a service's author writes unit tests with (docs/writing-a-service.md).

Events are fed to the agents' topics as records (encoded as a producer would: Avro in
Confluent wire format, against an in-memory registry holding the catalog's schemas) or
as the bytes a producer sent. ``run`` hands them to each agent's handler in batches,
through the same runtime a worker runs (decoding, positions and replays, the batch
pipeline, at-least-once settlement, dead letters), until every agent has read
everything, re-keyed events included. What they emitted, their tables' rows and the
dead letters can then be read back.

Each topic's partition is chosen by a hash of the key that is stable but not the
producers' murmur2: a key's events stay in one partition, in order, as on a broker.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.kafka.naming import TopicNaming
from pipeline.serde.catalog import Catalog
from pipeline.serde.codec import Codecs
from pipeline.serde.registry import InMemorySchemaSource
from pipeline.streaming.agents import Serdes
from pipeline.streaming.dead_letters import AGENT, ERROR_CLASS, ERROR_MESSAGE, DeadLetters
from pipeline.streaming.handlers import run_agents
from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Arrivals, Assignment, Event, MessageHeaders
from pipeline.streaming.positions import TrackedCodec, unframe_origin
from pipeline.streaming.processing import AtLeastOnce
from pipeline.streaming.producer import Delivered, Placement, ProducerRecord
from pipeline.streaming.topology import Topology, WindowedAgent
from pipeline.streaming.windows import StoredWindow, stored_windows


@dataclass(frozen=True)
class Record:
    """One record of a topic, as stored."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: MessageHeaders = None
    timestamp: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Delivery:
    """A record handed to an agent (``Event`` of pipeline.streaming.ports)."""

    message: Record


@dataclass(frozen=True)
class DeadLetter:
    """A dead letter: the failed record's own key and value, why it failed, and which
    agent failed it (each agent reading a topic dead-letters what it cannot process)."""

    key: bytes | None
    value: bytes | None
    error: str
    reason: str
    agent: str


class MemoryTopics:
    """Topics in lists, one per partition: what the agents' producer writes and what they
    read. Every send is acknowledged at once."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.logs: dict[tuple[str, int], list[Record]] = {}

    def partition_for(self, key: bytes | None) -> int:
        return zlib.crc32(key or b"") % self.partitions

    def append(self, record: ProducerRecord) -> Placement:
        """Store ``record``, stamped with its timestamp (by default now)."""
        partition = (
            record.partition if record.partition is not None else self.partition_for(record.key)
        )
        log = self.logs.setdefault((record.topic, partition), [])
        log.append(
            Record(
                record.topic,
                partition,
                len(log),
                record.key,
                record.value,
                list(record.headers or ()),
                time.time() if record.timestamp is None else record.timestamp / 1000,
            )
        )
        return Placement(record.topic, partition, len(log) - 1)

    def records(self, topic: str) -> list[Record]:
        """``topic``'s records, partition by partition, each in offset order."""
        return [
            record
            for (name, _), log in sorted(self.logs.items())
            if name == topic
            for record in log
        ]

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        delivered: Delivered = {}
        for message in messages:
            placed = self.append(message)
            delivered[(placed.topic, placed.partition)] = placed.offset
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        future.set_result(delivered)
        return future

    async def send_and_wait(self, message: ProducerRecord) -> Placement:
        return self.append(message)


class Pending:
    """The records an agent has not read yet (``Arrivals``): taken in batches, none
    once all were; of the partitions ``assignment`` holds."""

    def __init__(self, records: Iterable[Record], assignment: Assignment) -> None:
        self.waiting = [Delivery(record) for record in records]
        self.acknowledged: list[Event] = []
        self.assignment = assignment

    async def take(self, limit: int) -> list[Event]:
        taken, self.waiting = self.waiting[:limit], self.waiting[limit:]
        return list(taken)

    def ack(self, event: Event) -> None:
        self.acknowledged.append(event)

    def held(self) -> Assignment:
        return self.assignment


@dataclass(frozen=True)
class RunningAgent:
    """An agent the engine runs: what it reads, and what consumes it."""

    name: str
    topics: tuple[str, ...]
    consume: Callable[[Arrivals], Awaitable[None]]


class MemoryEngine:
    """The agents' engine in memory (``Engine``): one worker holding every partition of
    its tables' stores, for good; ``ServiceTest.run`` feeds the agents it runs."""

    def __init__(self, topics: TopicNaming) -> None:
        self.topics = topics
        self.stores: dict[str, MemoryPartitionStore] = {}
        self.agents: list[RunningAgent] = []

    def partition_store(self, table: str) -> MemoryPartitionStore:
        store = self.stores.get(table)
        if store is None:
            store = self.stores[table] = MemoryPartitionStore(self.topics.changelog(table))
        return store

    def run_agent(
        self, name: str, topics: Sequence[str], consume: Callable[[Arrivals], Awaitable[None]]
    ) -> None:
        self.agents.append(RunningAgent(name, tuple(topics), consume))

    def on_rebalance(self, callback: Callable[[], None]) -> None:
        """Never called back: with one worker holding every partition, nothing moves."""


class ServiceTest:
    """One service's agents with their tables, topics and dead letters in memory."""

    def __init__(self, topology: Topology, *, catalog: Catalog | None = None) -> None:
        topology.check()
        settings = topology.settings
        self.topology = topology
        self.catalog = catalog
        self.codecs = Codecs(
            catalog
            if catalog is not None
            else Catalog.load(settings.schema_dir, topic_prefix=settings.topic_prefix),
            InMemorySchemaSource(),
            auto_register=True,
        )
        self.codecs.prepare()  # every schema of the catalog registered, as a producer would
        self.topics = MemoryTopics(settings.partitions)
        self.metrics = Metrics()
        settlement = AtLeastOnce(self.topics, DeadLetters(self.topics, settings.app_id))
        serdes = Serdes(records=self.codecs, internal=topology.internal, topology=topology)
        # The wall clock the windowed agents read (seconds): ``quiet`` moves it.
        self.now = time.time()
        # One worker holding every partition, in the group's generation ``quiet`` gives.
        self.assignment = Assignment(0, frozenset(range(settings.partitions)))
        self.engine = MemoryEngine(topology.topics)
        self.runs = run_agents(
            self.engine, topology, settlement, serdes, self.metrics, wall_clock=self.wall_clock
        )
        self.stores = self.engine.stores
        # Per agent and source partition: the offset of the next record to read.
        self.positions: dict[tuple[str, str, int], int] = {}

    def send(
        self, topic: str, key: str, record: Mapping[str, Any], *, timestamp: int | None = None
    ) -> Placement:
        """Write ``record`` to ``topic`` as a producer would (Avro, Confluent-framed), with
        the Kafka ``timestamp`` given (epoch milliseconds; by default now)."""
        return self.send_bytes(
            topic, key.encode(), self.codecs.encode(topic, record), timestamp=timestamp
        )

    def send_bytes(
        self, topic: str, key: bytes | None, value: bytes | None, *, timestamp: int | None = None
    ) -> Placement:
        """Write a record's bytes to ``topic`` as they are: a bad one is for a dead letter."""
        return self.topics.append(ProducerRecord(topic, key, value, timestamp=timestamp))

    def timestamps(self, topic: str) -> list[int]:
        """The Kafka timestamps (epoch milliseconds) of ``topic``'s records, in the order of
        ``emitted``."""
        return [round(record.timestamp * 1000) for record in self.topics.records(topic)]

    def run(self) -> None:
        """Let every agent read what it has not read yet, until none has anything left."""
        asyncio.run(self._run())

    async def _run(self) -> None:
        while True:
            ran = False
            for agent in self.engine.agents:
                pending = Pending(self._unread(agent), self.assignment)
                if not pending.waiting:
                    continue
                ran = True
                await agent.consume(pending)
                for event in pending.acknowledged:
                    message = event.message
                    place = (agent.name, message.topic, message.partition)
                    self.positions[place] = max(self.positions.get(place, 0), message.offset + 1)
            if not ran:
                return

    def wall_clock(self) -> float:
        return self.now

    def quiet(self, seconds: float, *, generation: int = 0) -> None:
        """Let ``seconds`` of wall-clock time pass with no event arriving: each agent with
        a quiet handler (a windowed one, with ``window_idle_close_ms`` set) runs its quiet
        batch for every partition, as a worker holding them all would after that long, in
        the group's ``generation`` (another one than before: a rebalance happened)."""
        self.now += seconds
        self.assignment = Assignment(generation, self.assignment.partitions)
        asyncio.run(self._quiet())

    async def _quiet(self) -> None:
        for run in self.runs:
            if run.runner.quiet is not None:
                nothing = Pending((), self.assignment)
                await run.runner.quiet_batch(nothing, None, run.handler)

    def _unread(self, agent: RunningAgent) -> list[Record]:
        unread = []
        for (topic, partition), log in sorted(self.topics.logs.items()):
            if topic in agent.topics:
                unread += log[self.positions.get((agent.name, topic, partition), 0) :]
        return unread

    def restarted(self) -> ServiceTest:
        """The service started again as a worker that lost its state: on the same topics,
        from the offsets its agents reached, each table's store rebuilt from its changelog
        alone (a tombstone deletes its row)."""
        again = ServiceTest(self.topology, catalog=self.catalog)
        again.topics.logs = {place: list(log) for place, log in self.topics.logs.items()}
        again.positions = dict(self.positions)
        again.now = self.now
        for store in again.stores.values():
            for record in again.topics.records(store.changelog_topic):
                assert record.key is not None
                store.write(record.partition, [(record.key, record.value)])
        return again

    def rewind(self, topic: str) -> None:
        """Have the agents read ``topic`` again from its start, as after a crash before
        their offsets were committed: a replay, which the rows' positions skip."""
        for place in [place for place in self.positions if place[1] == topic]:
            del self.positions[place]

    def emitted(self, topic: str) -> list[tuple[str, Any]]:
        """What the agents emitted to ``topic``: (key, decoded value), in order per
        partition."""
        internal = self.topology.internal.get(topic)
        emitted = []
        for record in self.topics.records(topic):
            key = (record.key or b"").decode()
            if internal is not None:
                value = internal.decode(key, unframe_origin(record.value or b"")[1])
            else:
                value = self.codecs[topic].decode(record.value)
            emitted.append((key, value))
        return emitted

    def row(self, table: str, key: str) -> Any:
        """The row ``table`` holds for ``key``; None when it holds none."""
        spec = next(spec for spec in self.topology.tables if spec.name == table)
        stored = self.stores[table].read(self.topics.partition_for(key.encode()), key.encode())
        if stored is None:
            return None
        return TrackedCodec(spec.encode, spec.decode).decode(stored).row

    def windows(self, table: str, key: str) -> list[StoredWindow]:
        """The windows windowed ``table`` holds for ``key``, oldest first, each ``final``
        once closed."""
        agent = next(
            agent
            for agent in self.topology.agents
            if isinstance(agent, WindowedAgent) and agent.row_table.name == table
        )
        partition = self.topics.partition_for(key.encode())
        return stored_windows(agent, self.stores[table], partition, key.encode())

    def stored_keys(self, table: str) -> list[bytes]:
        """Every key ``table``'s store holds, windows, clocks and index entries included."""
        return sorted(self.stores[table].rows())

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the agents' metrics (0 when never recorded)."""
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def dead_letters(self, topic: str) -> list[DeadLetter]:
        """The dead letters of the records of ``topic`` the agents could not process."""
        letters = []
        for record in self.topics.records(self.topology.topics.dead_letters(topic)):
            headers = dict(record.headers or [])
            letters.append(
                DeadLetter(
                    record.key,
                    record.value,
                    headers[ERROR_CLASS].decode(),
                    headers[ERROR_MESSAGE].decode(),
                    headers[AGENT].decode(),
                )
            )
        return letters

    def replays_skipped(self, table: str) -> int:
        """Events ``table``'s agent skipped as already applied (the worker's
        ``pipeline_replays_skipped``)."""
        skipped = self.metrics.registry.get_sample_value(
            "pipeline_replays_skipped_total", {"table": table}
        )
        return int(skipped or 0)

    def join_records(self, join: str, outcome: str) -> int:
        """Stream records of ``join`` by ``outcome``: held, released, expired or refused
        (the worker's ``pipeline_join_records``)."""
        counted = self.metrics.registry.get_sample_value(
            "pipeline_join_records_total", {"join": join, "outcome": outcome}
        )
        return int(counted or 0)
