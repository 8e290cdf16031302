"""The runtime's agent handler, batch by batch, without a broker: records are JSON (a
stand-in for the registry codec), the table is in memory, and every send is acknowledged
at once. The services' own behaviour is tested through the public harness
(tests/unit/agents)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from pipeline.agents.orders import USER_STATS
from pipeline.agents.stock import STOCK
from pipeline.domain.encoding import decode_order_line
from pipeline.domain.rules import UserOrderStats
from pipeline.serde.codec import frame, schema_id_of
from pipeline.serde.errors import SchemaNotCached, UndecodableKey
from pipeline.services import loyalty_points, points_settings, shop
from pipeline.settings import Settings
from pipeline.streaming.agents import YIELD_EVERY, AgentHandler, Outputs, Serdes
from pipeline.streaming.dead_letters import DeadLetters
from pipeline.streaming.handlers import handler_for
from pipeline.streaming.memory import MemoryPartitionStore
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.positions import Origin, Position, TrackedCodec, unframe_origin
from pipeline.streaming.processing import AtLeastOnce, Event
from pipeline.streaming.producer import BatchProducer, Delivered, Outgoing, ProducerRecord
from pipeline.streaming.topology import Agent, Emit, Topology, UndeclaredTopic
from pipeline.topics import TopicNames

SETTINGS = Settings(app_id="unit", low_stock_threshold=10)


class JsonRecords:
    def decode_known(self, topic: str, data: bytes | None) -> dict[str, Any]:
        return cast(dict[str, Any], json.loads(data or b""))

    def lookup(self, schema_id: int) -> asyncio.Future[Any]:
        raise AssertionError("JSON records have no writer schemas")

    def prefetch(self, data: bytes | None) -> None:
        pass  # JSON records have no writer schemas to fetch

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        return json.dumps(record).encode()


class Broker:
    """Acknowledges every send at once, and keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, messages: Sequence[ProducerRecord]) -> asyncio.Future[Delivered]:
        self.sent += messages
        delivery: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        delivery.set_result({})
        return delivery


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = 0.0


@dataclass
class FakeEvent:
    message: FakeMessage


class Harness:
    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.broker = Broker()
        self.failed: list[tuple[Any, Exception]] = []
        self.metrics = Metrics()
        self.tables = {
            spec.name: MemoryPartitionStore(topology.topics.changelog(spec.name))
            for spec in topology.tables
        }
        self.serdes = Serdes(JsonRecords(), topology.internal, topology)

    def handler(self, agent: Agent) -> AgentHandler:
        table = self.tables[agent.table.name] if agent.table is not None else None
        settlement = AtLeastOnce(cast(BatchProducer, self.broker), cast(DeadLetters, None))
        outputs = Outputs(settlement, self.metrics)
        return handler_for(agent, table, self.serdes, outputs, self.metrics)

    def run(self, agent_name: str, *messages: FakeMessage) -> list[Outgoing]:
        """Handle ``messages`` as one batch; what the batch sent (derived, then changelog)."""
        (agent,) = [agent for agent in self.topology.agents if agent.name == agent_name]
        before = len(self.broker.sent)
        batch = [cast(Event, FakeEvent(message)) for message in messages]

        async def handle() -> None:
            prepared = await self.handler(agent)(batch, None)
            await prepared.complete()
            self.failed = [(event.message, error) for event, error in prepared.failed]

        asyncio.run(handle())
        return self.broker.sent[before:]

    def row(self, table: str, key: str) -> Any:
        spec = USER_STATS if table == USER_STATS.name else STOCK
        stored = self.tables[table].rows()[key.encode()]
        return TrackedCodec(spec.encode, spec.decode).decode(stored)


def order(offset: int, user: str, items: list[tuple[str, int]], partition: int = 3) -> FakeMessage:
    value = {
        "order_id": f"{user}-o{offset}",
        "user_id": user,
        "items": [{"sku": sku, "quantity": qty, "unit_price_cents": 100} for sku, qty in items],
        "total_cents": 100 * sum(qty for _, qty in items),
        "created_at": 1_700_000_000_000 + offset,
    }
    return FakeMessage(
        "order_created", partition, offset, user.encode(), json.dumps(value).encode()
    )


def test_an_order_updates_the_user_row_and_re_keys_its_lines_with_the_order_s_position() -> None:
    shop_run = Harness(shop(SETTINGS))
    sent = shop_run.run("orders", order(7, "u1", [("A", 2), ("B", 1)]))
    lines = [message for message in sent if message.topic == "unit-order_lines_by_sku"]
    assert [message.key for message in lines] == [b"A", b"B"]
    origins = [unframe_origin(message.value)[0] for message in lines]
    assert origins == [
        Origin("order_created:3", Position(7, 0)),
        Origin("order_created:3", Position(7, 1)),
    ]
    assert decode_order_line("A", unframe_origin(lines[0].value)[1]).quantity == 2
    (stats,) = [json.loads(m.value) for m in sent if m.topic == "user_order_stats"]
    assert stats == {
        "user_id": "u1",
        "order_count": 1,
        "total_spent_cents": 300,
        "last_order_id": "u1-o7",
        "updated_at": 1_700_000_000_007,
    }
    tracked = shop_run.row("user_order_stats", "u1")
    assert tracked.row == UserOrderStats(1, 300, "u1-o7")
    assert tracked.applied == {"order_created:3": Position(7)}


def test_a_table_event_without_a_key_fails_alone_with_the_typed_error() -> None:
    keyless = order(2, "u1", [("A", 1)])
    keyless.key = None
    shop_run = Harness(shop(SETTINGS))
    sent = shop_run.run("orders", order(1, "u1", [("A", 1)]), keyless, order(3, "u1", [("B", 1)]))
    ((message, error),) = shop_run.failed
    assert message is keyless
    assert isinstance(error, UndecodableKey) and "no key" in str(error)
    assert shop_run.row("user_order_stats", "u1").row.order_count == 2  # the others stand
    assert len([m for m in sent if m.topic == "user_order_stats"]) == 2


def test_an_event_a_rule_raises_for_fails_alone_and_leaves_its_row_as_it_was() -> None:
    bad = order(2, "u1", [("A", 1)])
    bad.value = json.dumps({**json.loads(bad.value), "total_cents": "not cents"}).encode()
    shop_run = Harness(shop(SETTINGS))
    shop_run.run("orders", order(1, "u1", [("A", 1)]), bad, order(3, "u1", [("B", 1)]))
    ((message, error),) = shop_run.failed
    assert message is bad and isinstance(error, TypeError)
    stats = shop_run.row("user_order_stats", "u1").row
    assert (stats.order_count, stats.last_order_id) == (2, "u1-o3")


def test_emitting_to_an_undeclared_topic_stops_the_batch_naming_the_topic() -> None:
    """A bug in the rule, not in its event: raised out of the batch (the worker stops),
    never a dead letter."""
    topology, topics = Topology(SETTINGS), TopicNames.from_settings(SETTINGS)
    agent = topology.agent("careless", emits=[topics.notifications])

    @agent.on(topics.user_registered)
    def emit_elsewhere(user_id: str, user: dict[str, Any]) -> list[Emit]:
        return [Emit(topics.stock_levels, user_id, {})]

    message = FakeMessage("user_registered", 0, 0, b"u1", b"{}")
    careless_run = Harness(topology)
    with pytest.raises(UndeclaredTopic, match="'stock_levels'"):
        careless_run.run("careless", message)
    assert careless_run.broker.sent == []


def test_a_dead_letter_replayed_for_the_shop_is_skipped_by_the_points_service() -> None:
    points_run = Harness(loyalty_points(points_settings(SETTINGS)))
    replay = order(9, "u1", [("A", 3)])
    replay.headers = [("dlq.replay.for", b"unit")]
    assert points_run.run("points", replay) == []
    assert points_run.metrics.foreign_replays.labels("order_created")._value.get() == 1
    shop_run = Harness(shop(SETTINGS))
    assert "user_order_stats" in [m.topic for m in shop_run.run("orders", replay)]


def echo_registrations(settings: Settings) -> Topology:
    """A service of one agent without a table."""
    topology = Topology(settings)
    topics = TopicNames.from_settings(settings)
    echo = topology.agent("echo", emits=[topics.notifications])

    @echo.on(topics.user_registered)
    def welcome(user_id: str, user: dict[str, Any]) -> list[Emit]:
        return [Emit(topics.notifications, user_id, user)]

    return topology


# With a table, a join's (its table side), without a table.
@pytest.mark.parametrize("agent_name", ["orders", "notifications", "echo"])
def test_a_long_batch_lets_the_event_loop_run_other_work_while_it_is_prepared(
    agent_name: str,
) -> None:
    shop_run = Harness(echo_registrations(SETTINGS) if agent_name == "echo" else shop(SETTINGS))
    (agent,) = [agent for agent in shop_run.topology.agents if agent.name == agent_name]
    if agent_name == "orders":
        messages = [order(offset, f"u{offset}", [("A", 1)]) for offset in range(200)]
    else:
        registration = {"user_id": "u", "email": "u@example.com", "name": "U"}
        payload = json.dumps({**registration, "registered_at": 1_700_000_000_000}).encode()
        messages = [FakeMessage("user_registered", 0, n, b"u", payload) for n in range(200)]
    batch = [cast(Event, FakeEvent(message)) for message in messages]
    ran_meanwhile = 0

    async def other_work() -> None:
        nonlocal ran_meanwhile
        while True:
            ran_meanwhile += 1
            await asyncio.sleep(0)

    async def prepare() -> None:
        other = asyncio.ensure_future(other_work())
        await asyncio.sleep(0)
        started = ran_meanwhile
        await shop_run.handler(agent)(batch, None)
        other.cancel()
        assert ran_meanwhile - started >= 200 // YIELD_EVERY

    asyncio.run(prepare())


class FetchedSchemas(JsonRecords):
    """JSON records, but a Confluent frame is under a writer id whose fetch never ends:
    which ids were asked for, by a decode (``lookup``) or ahead of one (``prefetch``)."""

    def __init__(self) -> None:
        self.looked_up: list[int] = []
        self.prefetched: list[int] = []

    def decode_known(self, topic: str, data: bytes | None) -> dict[str, Any]:
        if data and data[0] == 0:
            schema_id = schema_id_of(data)
            raise SchemaNotCached(f"writer schema id {schema_id}", schema_id=schema_id)
        return super().decode_known(topic, data)

    def lookup(self, schema_id: int) -> asyncio.Future[Any]:
        self.looked_up.append(schema_id)
        return asyncio.get_running_loop().create_future()

    def prefetch(self, data: bytes | None) -> None:
        if data and data[0] == 0:
            self.prefetched.append(schema_id_of(data))


def test_events_behind_one_waiting_for_its_schema_wait_and_have_their_schemas_fetched_too() -> None:
    shop_run = Harness(shop(SETTINGS))
    records = FetchedSchemas()
    shop_run.serdes = Serdes(records, shop_run.topology.internal, shop_run.topology)
    (agent,) = [agent for agent in shop_run.topology.agents if agent.name == "orders"]
    first, later, after = order(2, "u1", [("A", 1)]), order(3, "u1", [("A", 1)]), order(4, "u1", [])
    first.value, later.value = frame(501, b""), frame(502, b"")
    other = order(9, "u2", [("B", 1)], partition=5)
    messages = [order(1, "u1", [("A", 1)]), first, later, after, other]

    async def prepare() -> list[Any]:
        prepared = await shop_run.handler(agent)(
            [cast(Event, FakeEvent(m)) for m in messages], None
        )
        await prepared.complete()
        return [event.message for event in prepared.deferred]

    assert asyncio.run(prepare()) == [first, later, after]
    assert (records.looked_up, records.prefetched) == ([501], [502])
    users = {
        json.loads(m.value)["user_id"]
        for m in shop_run.broker.sent
        if m.topic == "user_order_stats"
    }
    assert users == {"u1", "u2"}  # u1's order before the wait, and the other partition's
