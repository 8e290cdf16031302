"""How a stream-table join (``JoinAgent`` of pipeline.streaming.topology) is run.

The join is one agent over its table topics and its stream topics, which are
co-partitioned, so a key's table row and its stream records meet in one partition's
store. Its rows are ``Joined``: the table row, or the stream records held while there
is none. A table event updates the row and releases what was held, in arrival order; a
stream event with a row is joined at once, one without is held. Held records live in
the row, so they are in the store and the changelog, exact across replays (the row
carries its positions like every row), and move with their partition. A record beyond
the hold bound (count, or event-time age behind its key's latest event) goes to its
dead-letter topic, its bytes unchanged, with a reason naming the key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pipeline.serde.errors import SchemaNotCached
from pipeline.streaming.agents import AgentHandler, Outputs, Serdes, fails_alone
from pipeline.streaming.dead_letters import dead_letter_record, error_class_of
from pipeline.streaming.joined import Held, Joined
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Message, PartitionStore
from pipeline.streaming.positions import Origin
from pipeline.streaming.producer import Outgoing
from pipeline.streaming.topology import JoinAgent, Update


class HoldBoundExceeded(ValueError):
    """A stream record its key cannot hold: too many held already, or held too long."""


class JoinHandler(AgentHandler):
    """The batch handler of one join (``BatchHandler`` of pipeline.streaming.processing)."""

    agent: JoinAgent[Any]

    def __init__(
        self,
        agent: JoinAgent[Any],
        store: PartitionStore,
        serdes: Serdes,
        outputs: Outputs,
        metrics: Metrics,
    ) -> None:
        super().__init__(agent, store, serdes, outputs, metrics)
        records = metrics.join_records
        self.held = records.labels(agent.name, "held")
        self.released = records.labels(agent.name, "released")
        self.expired = records.labels(agent.name, "expired")
        self.refused = records.labels(agent.name, "refused")
        self.dead_letter_count = metrics.dead_letters

    async def _apply(
        self, key: str, value: Any, origin: Origin, message: Message, row: Any
    ) -> tuple[Any, list[Outgoing]]:
        joined = cast(Joined[Any], row) if row is not None else Joined(None)
        outgoing: list[Outgoing] = []
        if message.topic in self.agent.stream_rules:
            joined = self._stream(key, value, origin, message, joined, outgoing)
        else:
            joined = await self._table(key, value, origin, message, joined, outgoing)
        return joined, outgoing

    def _stream(
        self,
        key: str,
        value: Any,
        origin: Origin,
        message: Message,
        joined: Joined[Any],
        outgoing: list[Outgoing],
    ) -> Joined[Any]:
        """A stream event: joined with its key's row, or held while there is none."""
        at = self.agent.event_time.of(value, message)
        if joined.row is not None:
            emitted = self.agent.stream_rules[message.topic](key, value, joined.row)
            self._check_declared(emitted)
            outgoing += self.serdes.encode(emitted, origin, at)
            return joined
        arrived = Held.of(message, at)
        held = self._unexpired(key, joined.held, arrived.event_time_ms, outgoing)
        if len(held) >= self.agent.hold.max_records:
            # Refused as part of the row's change, so a replay is skipped like any other.
            self.refused.inc()
            refusal = HoldBoundExceeded(
                f"key {key!r} has no row in {self.agent.row_table.name!r} yet and already holds "
                f"{len(held)} record(s) of join {self.agent.name!r}, its bound "
                "(PIPELINE_JOIN_HOLD_MAX_RECORDS)"
            )
            outgoing.append(self._dead_letter(arrived, refusal))
            return Joined(None, held)
        self.held.inc()
        return Joined(None, (*held, arrived))

    async def _table(
        self,
        key: str,
        value: Any,
        origin: Origin,
        message: Message,
        joined: Joined[Any],
        outgoing: list[Outgoing],
    ) -> Joined[Any]:
        """A table event: the key's new row, then the records held for it, released."""
        at = self.agent.event_time.of(value, message)
        update: Update[Any] = self.agent.rules[message.topic](key, value, joined.row)
        self._check_declared(update.emit)
        outgoing += self.serdes.encode(update.emit, origin, at)
        held = self._unexpired(key, joined.held, at, outgoing)
        for record in held:
            outgoing += await self._release(key, record, update.row)
        return Joined(update.row)

    async def _release(self, key: str, record: Held, row: Any) -> list[Outgoing]:
        """What a held record's rule emits now that its key has ``row``; a record that
        fails (its rule raises, its schema is gone) is dead-lettered alone."""
        try:
            try:
                value, origin = self.serdes.decode(record, key)
            except SchemaNotCached as missing:  # a restart since it was held
                assert missing.schema_id is not None
                await self.serdes.records.lookup(missing.schema_id)
                value, origin = self.serdes.decode(record, key)
            emitted = self.agent.stream_rules[record.topic](key, value, row)
            self._check_declared(emitted)
            released = self.serdes.encode(emitted, origin, record.event_time_ms)
        except Exception as error:
            if not fails_alone(error):
                raise
            return [self._dead_letter(record, error)]
        self.released.inc()
        return released

    def _unexpired(
        self, key: str, held: Sequence[Held], now_ms: int, outgoing: list[Outgoing]
    ) -> tuple[Held, ...]:
        """Of ``held``, those within the age bound at event time ``now_ms``; the others
        are dead-lettered into ``outgoing``."""
        max_age = self.agent.hold.max_age_ms
        kept = []
        for record in held:
            age = now_ms - record.event_time_ms
            if age <= max_age:
                kept.append(record)
                continue
            self.expired.inc()
            outgoing.append(
                self._dead_letter(
                    record,
                    HoldBoundExceeded(
                        f"key {key!r} got no row in {self.agent.row_table.name!r} within "
                        f"{max_age} ms of event time (PIPELINE_JOIN_HOLD_MAX_AGE_MS): held "
                        f"{age} ms by join {self.agent.name!r}"
                    ),
                )
            )
        return tuple(kept)

    def _dead_letter(self, record: Held, error: BaseException) -> Outgoing:
        """The dead letter of a held record, sent with the batch's derived events."""
        letter = dead_letter_record(record, error, 1, self.app_id, self.agent.name)
        self.dead_letter_count.labels(record.topic, error_class_of(error)).inc()
        return Outgoing(
            letter.topic, cast(bytes, letter.key), cast(bytes, letter.value), None, letter.headers
        )
