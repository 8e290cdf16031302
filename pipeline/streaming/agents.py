"""How a declared agent (pipeline.streaming.topology) is run: its rules become the
batch handler that pipeline.streaming.processing drives.

For each event of a batch: the key is decoded as UTF-8 text and the value by its
topic's serde (an event under a writer schema not fetched yet is deferred, with its
partition's later events, while it is fetched; one that fails to decode, or whose
rule raises, is dead-lettered alone); the event's origin is its own
topic, partition and offset, or, for an event re-keyed through an internal topic,
the origin it carries. With a table, the key's row is read (through the batch's
and the in-flight batch's changes); a row that already applied the origin is a
replay and the event changes nothing (counted in ``pipeline_replays_skipped``);
otherwise the rule runs, its row is kept with the origin's position, and its
events are encoded for their topics, re-keyed ones framed with their origin. The
batch's derived events, then its changelog records, then its store writes and
acknowledgements follow the order pipeline.streaming.processing describes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from pipeline.serde.errors import RegistryUnavailable, SchemaNotCached, UndecodableKey
from pipeline.streaming.dead_letters import is_replay_for_another
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Event, Message, PartitionStore
from pipeline.streaming.positions import (
    Origin,
    Position,
    Tracked,
    TrackedCodec,
    advance,
    frame_origin,
    is_new,
    origin_header,
    source_id,
    unframe_origin,
)
from pipeline.streaming.processing import (
    Prepared,
    RowBatch,
    RowCache,
    Settlement,
    is_permanent,
)
from pipeline.streaming.producer import Delivered, Outgoing, ProducerRecord
from pipeline.streaming.topology import (
    Agent,
    Emitted,
    InternalTopic,
    RuleBug,
    Topology,
    UndeclaredTopic,
    Update,
)


class RecordCodec(Protocol):
    """Avro in Confluent wire format, by topic (pipeline.serde.codec implements it)."""

    def decode_known(self, topic: str, data: bytes | None) -> dict[str, Any]:
        """The record; SchemaNotCached for a writer schema not fetched yet."""
        ...

    def lookup(self, schema_id: int) -> asyncio.Future[Any]:
        """The fetch of a writer schema: under way, or raising why it failed."""
        ...

    def prefetch(self, data: bytes | None) -> None:
        """Start fetching the writer schema ``data`` is framed with, if it is not known."""
        ...

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes: ...


def fails_alone(error: Exception) -> bool:
    """Whether ``error``, raised while an event was applied, is that event's alone (its
    rule's: rules are pure; its record's), not a bug in the rules, which stops the agent,
    or the registry away, which has the batch tried again."""
    return not isinstance(error, RuleBug | RegistryUnavailable)


def decode_key(message: Message) -> str:
    """The record key as text (keys on the wire are plain UTF-8 strings)."""
    if message.key is None:
        return ""
    try:
        return message.key.decode()
    except UnicodeDecodeError as error:
        raise UndecodableKey(f"the key is not UTF-8: {error}") from None


@dataclass(frozen=True)
class Serdes:
    """Every topic's serde: the registry's Avro codec, or an internal topic's encoding."""

    records: RecordCodec
    internal: Mapping[str, InternalTopic[Any]]
    topology: Topology

    # (topic, partition) → source id: made once, asked for every event.
    sources: dict[tuple[str, int], str] = field(default_factory=dict)

    def source(self, topic: str, partition: int) -> str:
        place = (topic, partition)
        found = self.sources.get(place)
        if found is None:
            found = self.sources[place] = source_id(self.topology.topics.logical(topic), partition)
        return found

    def decode(self, message: Message, key: str) -> tuple[Any, Origin]:
        """The event's value, and where it comes from; SchemaNotCached for a writer
        schema not fetched yet."""
        internal = self.internal.get(message.topic)
        if internal is not None:
            origin, payload = unframe_origin(message.value or b"")
            return internal.decode(key, payload), origin
        value = self.records.decode_known(message.topic, message.value)
        source = self.source(message.topic, message.partition)
        return value, Origin(source, Position(message.offset))

    def prefetch(self, message: Message) -> None:
        """Start fetching the writer schema of an event that waits behind another one."""
        if message.topic not in self.internal:
            self.records.prefetch(message.value)

    def encode(self, emitted: Sequence[Emitted], origin: Origin, timestamp: int) -> list[Outgoing]:
        """``emitted`` as records of their topics, stamped with ``timestamp`` (the event
        time of the event they come from); re-keyed ones framed with ``origin`` and their
        index among its re-keyed events."""
        internal = self.internal
        records = self.records
        derived = []
        header: bytes | None = None
        rekeyed = 0
        for event in emitted:
            topic = event.topic
            rekeying = internal.get(topic)
            if rekeying is None:
                value = records.encode(topic, event.value)
            else:
                if header is None:
                    header = origin_header(origin.source)
                payload = rekeying.encode(event.value)
                value = frame_origin(header, origin.position.offset, rekeyed, payload)
                rekeyed += 1
            derived.append(Outgoing(topic, event.key.encode(), value, timestamp=timestamp))
        return derived


@dataclass(frozen=True)
class Outputs:
    """Where derived events and changelog records go: the guarantee's settlement
    (pipeline.streaming.processing), counted by topic."""

    settlement: Settlement
    metrics: Metrics

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        """Hand ``messages`` to the settlement; the future resolves once the broker
        acknowledged every one it sent."""
        for topic, count in Counter(message.topic for message in messages).items():
            self.metrics.derived_events.labels(topic).inc(count)
        return await self.settlement.send(messages)


# An event's key (text), value and origin.
Decoded = tuple[str, Any, Origin]


@dataclass
class Setbacks:
    """What a batch being prepared could not process (yet): ``Prepared``'s ``failed``,
    ``deferred`` and ``waiting``."""

    failed: list[tuple[Event, Exception]] = field(default_factory=list)
    deferred: list[Event] = field(default_factory=list)
    waiting: list[asyncio.Future[Any]] = field(default_factory=list)

    def onto(self, prepared: Prepared) -> Prepared:
        prepared.failed, prepared.deferred, prepared.waiting = (
            self.failed,
            self.deferred,
            self.waiting,
        )
        return prepared


# A batch being prepared lets the event loop run other work after this many events: a
# full batch (2,000 events by default) is about 0.4 s of computing, during which the
# other agents' events and the producer's delivery reports would otherwise wait.
YIELD_EVERY = 64


class AgentHandler:
    """The batch handler of one agent (``BatchHandler`` in pipeline.streaming.processing)."""

    def __init__(
        self,
        agent: Agent,
        store: PartitionStore | None,
        serdes: Serdes,
        outputs: Outputs,
        metrics: Metrics,
    ) -> None:
        self.agent = agent
        self.store = store
        self.codec = TrackedCodec(agent.table.encode, agent.table.decode) if agent.table else None
        capacity = serdes.topology.settings.row_cache_rows
        self.cache: RowCache[Tracked[Any]] | None = (
            RowCache(capacity) if agent.table and capacity else None
        )
        self.serdes = serdes
        self.outputs = outputs
        self.replays = metrics.replays_skipped.labels(agent.table.name if agent.table else "")
        self.foreign_replays = metrics.foreign_replays
        self.app_id = serdes.topology.settings.app_id

    def _foreign(self, message: Message) -> bool:
        if is_replay_for_another(message, self.app_id, self.agent.name):
            self.foreign_replays.labels(message.topic).inc()
            return True
        return False

    def _check_declared(self, emitted: Sequence[Emitted]) -> None:
        """A rule's bug, not its event's: raised out of the batch, it stops the agent."""
        emits = self.agent.emits
        for event in emitted:
            if event.topic not in emits:
                raise UndeclaredTopic(
                    f"agent {self.agent.name!r} emitted to {event.topic!r}, which it does not "
                    f"declare (emits: {', '.join(sorted(emits)) or 'none'})"
                )

    def _decode(self, message: Message, keyed: bool, setbacks: Setbacks) -> Decoded | None:
        """The event's key, value and origin; None while its writer schema is fetched
        (the fetch is in ``setbacks.waiting``)."""
        key = decode_key(message)
        if keyed and not key:
            raise UndecodableKey("the message has no key: a table row needs one")
        try:
            value, origin = self.serdes.decode(message, key)
        except SchemaNotCached as missing:
            assert missing.schema_id is not None
            lookup = self.serdes.records.lookup(missing.schema_id)  # raises a failed one's error
            if not lookup.done():
                setbacks.waiting.append(lookup)
                return None
            value, origin = self.serdes.decode(message, key)
        return key, value, origin

    def _decoded(
        self, events: Sequence[Event], keyed: bool, setbacks: Setbacks
    ) -> Iterator[tuple[Event, Decoded]]:
        """The events of a batch to process, decoded, in order. Those that cannot be
        decoded go to ``setbacks.failed``; those waiting for their writer schema, and every
        later one of their partitions, to ``setbacks.deferred``."""
        blocked: set[tuple[str, int]] = set()
        for event in events:
            message = event.message
            if blocked and (message.topic, message.partition) in blocked:
                self.serdes.prefetch(message)
                setbacks.deferred.append(event)
                continue
            if self._foreign(message):
                continue
            try:
                decoded = self._decode(message, keyed, setbacks)
            except Exception as error:
                if not is_permanent(error):
                    raise  # the registry away: the batch is retried event by event
                setbacks.failed.append((event, error))
                continue
            if decoded is None:
                blocked.add((message.topic, message.partition))
                setbacks.deferred.append(event)
                continue
            yield event, decoded

    def _rows(
        self, store: PartitionStore, codec: TrackedCodec[Any], in_flight: Prepared | None
    ) -> RowBatch[Tracked[Any]]:
        """The rows of a batch prepared on top of ``in_flight``."""
        return RowBatch(
            store,
            codec.decode,
            codec.encode,
            self.outputs.send,
            in_flight,
            self.outputs.settlement.unsettled(store),
            self.cache,
        )

    async def __call__(self, events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        if self.store is None or self.codec is None:
            return await self._stateless(events)
        rows = self._rows(self.store, self.codec, in_flight)
        derived: list[Outgoing] = []
        setbacks = Setbacks()
        decoded = self._decoded(events, True, setbacks)
        for index, (event, (key, value, origin)) in enumerate(decoded, 1):
            if not index % YIELD_EVERY:
                await asyncio.sleep(0)
            message = event.message
            raw_key = cast(bytes, message.key)
            tracked: Tracked[Any] | None = rows.get(raw_key, event)
            applied = tracked.applied if tracked is not None else {}
            if not is_new(applied, origin):
                self.replays.inc()
                continue
            row = tracked.row if tracked is not None else None
            try:
                row, outgoing = await self._apply(key, value, origin, message, row)
            except Exception as error:
                if not fails_alone(error):
                    raise
                setbacks.failed.append((event, error))
                continue
            derived += outgoing
            rows.put(raw_key, Tracked(row, advance(applied, origin)), event)
        return setbacks.onto(await rows.send(derived))

    async def _apply(
        self, key: str, value: Any, origin: Origin, message: Message, row: Any
    ) -> tuple[Any, list[Outgoing]]:
        """One new event's change of its key's ``row`` (None when the table has none): the
        new row and the records it emits, encoded. Raises what fails this event alone (its
        rule's error, a record its topic's schema refuses)."""
        at = self.agent.event_time.of(value, message)
        update: Update[Any] = self.agent.rules[message.topic](key, value, row)
        self._check_declared(update.emit)
        return update.row, self.serdes.encode(update.emit, origin, at)

    async def _stateless(self, events: Sequence[Event]) -> Prepared:
        rules = self.agent.rules
        event_time = self.agent.event_time
        derived: list[Outgoing] = []
        setbacks = Setbacks()
        decoded = self._decoded(events, False, setbacks)
        for index, (event, (key, value, origin)) in enumerate(decoded, 1):
            if not index % YIELD_EVERY:
                await asyncio.sleep(0)
            message = event.message
            try:
                at = event_time.of(value, message)
                emitted = rules[message.topic](key, value)
            except Exception as error:  # the rule's, for this event alone: rules are pure
                setbacks.failed.append((event, error))
                continue
            self._check_declared(emitted)
            try:
                derived += self.serdes.encode(emitted, origin, at)
            except Exception as error:  # a record its topic's schema refuses
                setbacks.failed.append((event, error))
        return setbacks.onto(Prepared(await self.outputs.send(derived), derived=derived))
