"""How a declared agent (pipeline.streaming.topology) is run: its rules become the
batch handler that pipeline.streaming.processing drives.

For each event of a batch: the key is decoded as UTF-8 text and the value by its
topic's serde (awaiting an unknown schema id); the event's origin is its own
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from faust.types import Message, StoreT, TableT

from pipeline.serde.errors import UndecodableKey
from pipeline.streaming.dead_letters import is_replay_for_another
from pipeline.streaming.metrics import Metrics
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
from pipeline.streaming.processing import Event, Prepared, RowBatch, RowCache, Settlement
from pipeline.streaming.producer import Delivered, Outgoing
from pipeline.streaming.topology import (
    Agent,
    Emit,
    InternalTopic,
    Topology,
    UndeclaredTopic,
    Update,
)


class RecordCodec(Protocol):
    """Avro in Confluent wire format, by topic (pipeline.serde.codec implements it)."""

    async def decode(self, topic: str, data: bytes | None) -> dict[str, Any]: ...

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes: ...


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

    async def decode(self, message: Message, key: str) -> tuple[Any, Origin]:
        """The event's value, and where it comes from."""
        internal = self.internal.get(message.topic)
        if internal is not None:
            origin, payload = unframe_origin(message.value or b"")
            return internal.decode(key, payload), origin
        value = await self.records.decode(message.topic, message.value)
        source = self.source(message.topic, message.partition)
        return value, Origin(source, Position(message.offset))

    def encode(self, emitted: Sequence[Emit], origin: Origin) -> list[Outgoing]:
        """``emitted`` as records of their topics; re-keyed ones framed with ``origin`` and
        their index among its re-keyed events."""
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
            derived.append(Outgoing(topic, event.key.encode(), value))
        return derived


@dataclass(frozen=True)
class Outputs:
    """Where derived events and changelog records go: the guarantee's settlement
    (pipeline.streaming.processing), counted by topic."""

    settlement: Settlement
    metrics: Metrics

    async def send(self, messages: Sequence[Outgoing]) -> asyncio.Future[Delivered]:
        """Hand ``messages`` to the settlement; the future resolves once the broker
        acknowledged every one it sent."""
        for topic, count in Counter(message.topic for message in messages).items():
            self.metrics.derived_events.labels(topic).inc(count)
        return await self.settlement.send(messages)


# A batch being prepared lets the event loop run other work after this many events: a
# full batch (2,000 events by default) is about 0.4 s of computing, during which the
# other agents' events and the producer's delivery reports would otherwise wait.
YIELD_EVERY = 64


class AgentHandler:
    """The batch handler of one agent (``BatchHandler`` in pipeline.streaming.processing)."""

    def __init__(
        self,
        agent: Agent,
        table: TableT[bytes, bytes] | None,
        serdes: Serdes,
        outputs: Outputs,
        metrics: Metrics,
    ) -> None:
        self.agent = agent
        self.table = table
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
        if is_replay_for_another(message, self.app_id):
            self.foreign_replays.labels(message.topic).inc()
            return True
        return False

    def _encode(self, emitted: Sequence[Emit], origin: Origin) -> list[Outgoing]:
        emits = self.agent.emits
        for event in emitted:
            if event.topic not in emits:
                raise UndeclaredTopic(
                    f"agent {self.agent.name!r} emitted to {event.topic!r}, which it does not "
                    f"declare (emits: {', '.join(sorted(emits)) or 'none'})"
                )
        return self.serdes.encode(emitted, origin)

    async def __call__(self, events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        if self.table is None or self.codec is None:
            return await self._stateless(events)
        rules = self.agent.rules
        rows = RowBatch(
            self.table,
            self.codec.decode,
            self.codec.encode,
            self.outputs.send,
            in_flight,
            self.outputs.settlement.unsettled(cast(StoreT[bytes, bytes], self.table.data)),
            self.cache,
        )
        derived: list[Outgoing] = []
        for index, event in enumerate(events, 1):
            if not index % YIELD_EVERY:
                await asyncio.sleep(0)
            message = event.message
            if self._foreign(message):
                continue
            key = decode_key(message)
            if not key:
                raise UndecodableKey("the message has no key: a table row needs one")
            value, origin = await self.serdes.decode(message, key)
            raw_key = cast(bytes, message.key)
            tracked: Tracked[Any] | None = rows.get(raw_key, event)
            applied = tracked.applied if tracked is not None else {}
            if not is_new(applied, origin):
                self.replays.inc()
                continue
            update: Update[Any] = rules[message.topic](
                key, value, tracked.row if tracked is not None else None
            )
            derived += self._encode(update.emit, origin)
            rows.put(raw_key, Tracked(update.row, advance(applied, origin)), event)
        return await rows.send(derived)

    async def _stateless(self, events: Sequence[Event]) -> Prepared:
        rules = self.agent.rules
        derived: list[Outgoing] = []
        for index, event in enumerate(events, 1):
            if not index % YIELD_EVERY:
                await asyncio.sleep(0)
            message = event.message
            if self._foreign(message):
                continue
            key = decode_key(message)
            value, origin = await self.serdes.decode(message, key)
            derived += self._encode(rules[message.topic](key, value), origin)
        return Prepared(await self.outputs.send(derived), derived=derived)
