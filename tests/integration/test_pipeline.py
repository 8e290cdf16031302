"""End to end with two real workers: a known stream in, tables, views and derived
topics checked against values computed from the input."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipeline.dev import expected
from pipeline.dev.audit import Record, decoded, read_topic
from pipeline.dev.loadgen import CONTRACT, LoadConfig, ShopEvent, adjustment, generate, order, send
from pipeline.dev.workers import Deployment, WorkerProcess, http_json, wait_for
from pipeline.serde.codec import Codecs
from pipeline.streaming.dead_letters import (
    AGENT,
    ATTEMPTS,
    ERROR_CLASS,
    SCHEMA_ID,
    SOURCE_OFFSET,
    SOURCE_TOPIC,
)
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment, end_offsets, owns_partitions

pytestmark = pytest.mark.integration

THRESHOLD = 10
# Adjustments only (one input topic, so the order of application is the send order):
# 15 → 12 → 8 (crossing) → 7 → 27 → -3 (crossing).
LOW_STOCK_SKU = "LOW-STOCK-PROBE"
LOW_STOCK_DELTAS = [15, -3, -4, -1, 20, -30]


@dataclass
class Shop:
    deployment: Deployment
    workers: list[WorkerProcess]
    events: list[ShopEvent]
    codecs: Codecs


def scenario() -> list[ShopEvent]:
    # Every fifth user orders before registering: those orders wait for the registration.
    config = LoadConfig(
        users=40, orders=400, skus=12, restock_every=8, seed=7, late_registration_every=5
    )
    events = list(generate(config))
    events += [
        adjustment(LOW_STOCK_SKU, delta, "probe", 1_767_300_000_000 + index)
        for index, delta in enumerate(LOW_STOCK_DELTAS)
    ]
    return events


@pytest.fixture(scope="module")
def shop(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    name = f"it-e2e-{uuid.uuid4().hex[:8]}"
    deployed = deployment(stack, name, tmp_path_factory.mktemp(name))
    workers = [deployed.worker("a").start(), deployed.worker("b").start()]
    try:
        for worker in workers:
            worker.wait_healthy()
        # Both in the group (each owns partitions) before the stream starts.
        wait_for("both workers to own partitions", lambda: all(map(owns_partitions, workers)))
        events = scenario()
        report = send(events, deployed.settings, progress=False)
        assert report.failed == 0
        codecs = Codecs.from_settings(deployed.settings)
        codecs.prepare()
        yield Shop(deployed, workers, events, codecs)
    finally:
        for worker in workers:
            worker.stop()


def all_views_match(worker: WorkerProcess, shop: Shop) -> bool:
    for user_id, user in expected.user_stats(shop.events).items():
        status, body = worker.get(f"/users/{user_id}/orders")
        if status != 200 or (body["order_count"], body["total_spent_cents"]) != (
            user.order_count,
            user.total_spent_cents,
        ):
            return False
    for sku, available in expected.stock(shop.events).items():
        status, body = worker.get(f"/stock/{sku}")
        if status != 200 or body != {"sku": sku, "available": available}:
            return False
    return True


def test_tables_equal_values_computed_from_the_input_through_either_worker(shop: Shop) -> None:
    for worker in shop.workers:

        def matches(worker: WorkerProcess = worker) -> bool:
            return all_views_match(worker, shop)

        wait_for(f"views of worker {worker.label} to match", matches)
    # Both workers answered for every key, so each forwarded the keys it does not own.
    assert all(w.metric("pipeline_routed_requests_total", table="stock") > 0 for w in shop.workers)


def stats_by_user(shop: Shop) -> dict[str, list[dict[str, Any]]]:
    topic = shop.deployment.names.user_order_stats
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for stats in decoded(shop.codecs, topic, read_topic(shop.deployment.settings, topic)):
        by_user[stats["user_id"]].append(stats)
    return by_user


def test_each_users_orders_are_applied_in_send_order(shop: Shop) -> None:
    wanted = expected.user_stats(shop.events)
    wait_for(
        "a stats event for every order",
        lambda: (
            sum(len(v) for v in stats_by_user(shop).values())
            >= sum(u.order_count for u in wanted.values())
        ),
    )
    by_user = stats_by_user(shop)
    assert set(wanted) <= set(by_user)
    for user_id, user in wanted.items():
        # One user's events sit on one partition, in the order they were emitted.
        emitted = [(s["order_count"], s["last_order_id"]) for s in by_user[user_id]]
        assert emitted == list(enumerate(user.order_ids or [], start=1)), user_id


def stock_levels_by_sku(shop: Shop) -> dict[str, list[int]]:
    """Levels of the scenario's SKUs (other tests add their own), in emission order."""
    topic = shop.deployment.names.stock_levels
    scenario_skus = expected.stock(shop.events)
    levels: dict[str, list[int]] = defaultdict(list)
    for level in decoded(shop.codecs, topic, read_topic(shop.deployment.settings, topic)):
        if level["sku"] in scenario_skus:
            levels[level["sku"]].append(level["available"])
    return levels


def test_derived_topics_have_the_expected_events(shop: Shop) -> None:
    settings, names = shop.deployment.settings, shop.deployment.names
    changes = expected.stock_changes(shop.events)
    wait_for(
        "a stock level for every stock change",
        lambda: sum(len(v) for v in stock_levels_by_sku(shop).values()) >= changes,
    )
    levels = stock_levels_by_sku(shop)
    assert sum(len(v) for v in levels.values()) == changes
    assert {sku: values[-1] for sku, values in levels.items()} == expected.stock(shop.events)

    alerts: dict[str, list[int]] = defaultdict(list)
    for alert in decoded(
        shop.codecs, names.low_stock_alerts, read_topic(settings, names.low_stock_alerts)
    ):
        assert alert["threshold"] == THRESHOLD
        alerts[alert["sku"]].append(alert["available"])
    # Exactly one alert per downward crossing, in the order the stock changed.
    for sku, values in levels.items():
        assert alerts.get(sku, []) == expected.crossings(values, THRESHOLD), sku
    assert alerts[LOW_STOCK_SKU] == [8, -3]
    assert len(alerts) > 1  # the random stream crossed too, not only the probe

    wanted = expected.notifications(shop.events)
    wait_for(
        "a welcome per registration and a confirmation per order",
        lambda: len(read_topic(settings, names.notifications)) >= sum(wanted.values()),
    )
    requests = decoded(shop.codecs, names.notifications, read_topic(settings, names.notifications))
    have = Counter((r["user_id"], r["template"], r["order_id"], r["address"]) for r in requests)
    assert have == wanted
    assert {r["channel"] for r in requests} == {"email"}


@pytest.mark.parametrize("worker_index", [0, 1])
def test_views_answer_404_and_400_as_json(shop: Shop, worker_index: int) -> None:
    worker = shop.workers[worker_index]
    status, body = worker.get("/stock/NEVER-SEEN")
    assert status == 404 and "error" in body
    status, body = worker.get("/users/nobody-at-all/orders")
    assert status == 404 and "error" in body
    status, body = worker.get("/stock/bad%01key")
    assert status == 400 and body["details"] == {"key": "contains control characters"}
    status, body = worker.get("/no/such/path")
    assert status == 404 and "error" in body
    status, body = worker.get("/health")
    assert status == 200 and body["status"] == "ok"


def test_metrics_count_the_stream(shop: Shop) -> None:
    topic = shop.deployment.names.order_created
    orders = sum(1 for e in shop.events if e.stream == CONTRACT.order_created)
    wait_for(
        "every order counted once across the workers",
        lambda: (
            sum(w.metric("pipeline_events_processed_total", topic=topic) for w in shop.workers)
            >= orders
        ),
    )


def test_ingest_produces_with_acknowledgement(shop: Shop) -> None:
    topic = shop.deployment.names.user_registered
    user = {
        "user_id": "posted-user",
        "email": "posted@shop.example",
        "name": "Posted",
        "registered_at": 1_767_400_000_000,
    }
    status, body = http_json("POST", f"{shop.workers[1].url}/users", user)
    assert status == 202, body
    assert body["topic"] == topic

    consumer = Consumer(
        {**shop.deployment.settings.kafka_client_config(), "group.id": "ingest-check"}
    )
    try:
        consumer.assign([TopicPartition(topic, body["partition"], body["offset"])])
        message = consumer.poll(30)
        assert message is not None and message.error() is None
        assert message.key() == b"posted-user"
        # A reader schema and the topic-name strategy, explicitly: without them
        # confluent-kafka 2.16 asks the registry for subject associations first.
        deserializer = AvroDeserializer(
            SchemaRegistryClient(shop.deployment.settings.registry_client_config()),
            shop.codecs[topic].topic_schema.schema_str,
            conf={"subject.name.strategy": topic_subject_name_strategy},
        )
        value = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
    finally:
        consumer.close()
    assert {k: v for k, v in value.items() if k != "registered_at"} == {
        k: v for k, v in user.items() if k != "registered_at"
    }
    assert int(value["registered_at"].timestamp() * 1000) == user["registered_at"]


@pytest.mark.parametrize(
    ("path", "body", "bad_field"),
    [
        ("/users", {"user_id": "u", "email": "e", "name": 5, "registered_at": 1}, "name"),
        (
            "/orders",
            {
                "order_id": "o",
                "user_id": "u",
                "items": [{"sku": "A", "quantity": "two", "unit_price_cents": 1}],
                "total_cents": 1,
                "created_at": 1,
            },
            "items[0].quantity",
        ),
        ("/stock", {"sku": "A", "reason": "r", "adjusted_at": 1}, "delta"),
    ],
)
def test_ingest_rejects_invalid_body_and_produces_nothing(
    shop: Shop, path: str, body: dict[str, Any], bad_field: str
) -> None:
    names = shop.deployment.names
    topic = {
        "/users": names.user_registered,
        "/orders": names.order_created,
        "/stock": names.stock_adjusted,
    }[path]
    before = end_offsets(shop.deployment.settings, topic)
    status, answer = http_json("POST", shop.workers[0].url + path, body)
    assert status == 400
    assert set(answer) == {"error", "details"}
    assert any(detail.startswith(bad_field) for detail in answer["details"]), answer
    status, answer = http_json("POST", shop.workers[0].url + path, raw=b"{not json")
    assert status == 400 and "error" in answer
    assert end_offsets(shop.deployment.settings, topic) == before


def test_poison_messages_go_to_the_dlq_unchanged_and_the_rest_is_processed(shop: Shop) -> None:
    names, settings = shop.deployment.names, shop.deployment.settings
    user = "poison-neighbour"
    lines = [{"sku": "POISON-SKU", "quantity": 1, "unit_price_cents": 100}]
    good = [order(user, f"{user}-o{n:05d}", lines, 1_767_500_000_000 + n) for n in (1, 2)]
    not_avro = b"this is not avro"
    unknown_id = b"\x00\x00\x0f\x42\x40" + b"\x02xx"  # schema id 1,000,000
    producer = Producer({**settings.kafka_client_config(), "partitioner": "murmur2_random"})
    for value in (
        shop.codecs.encode(names.order_created, good[0].record),
        not_avro,
        unknown_id,
        shop.codecs.encode(names.order_created, good[1].record),
    ):
        producer.produce(names.order_created, key=user.encode(), value=value)
    producer.flush()

    wait_for(
        "the good orders around the poison",
        lambda: shop.workers[0].get(f"/users/{user}/orders")[1].get("order_count") == 2,
    )
    dlq = names.dead_letters(names.order_created)

    # Each agent reading order_created dead-letters the two on its own.
    readers = ("notifications", "orders")

    def every_dead_letter() -> list[Record] | None:
        found = read_topic(settings, dlq)
        return found if len(found) >= 2 * len(readers) else None

    letters = wait_for("each agent's dead letters", every_dead_letter)
    assert sorted((dict(letter.headers)[AGENT], letter.value or b"") for letter in letters) == [
        (agent.encode(), value) for agent in readers for value in sorted([not_avro, unknown_id])
    ]
    assert {letter.key for letter in letters} == {user.encode()}
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[SOURCE_TOPIC] == names.order_created.encode()
        assert headers[ATTEMPTS] == b"1"  # undecodable: never retried
        assert int(headers[SOURCE_OFFSET]) >= 0
        if letter.value == unknown_id:
            assert headers[ERROR_CLASS] == b"UnknownSchemaId"
            assert headers[SCHEMA_ID] == b"1000000"
        else:
            assert headers[ERROR_CLASS] == b"NotConfluentFraming"

    cli = [str(Path(sys.executable).with_name("pipeline")), "dlq"]
    env = shop.deployment.env
    listing = subprocess.run(
        [*cli, "list", names.order_created], env=env, capture_output=True, text=True, check=True
    )
    assert "4 dead letter(s)" in listing.stdout
    replayed = subprocess.run(
        [*cli, "replay", names.order_created], env=env, capture_output=True, text=True, check=True
    )
    assert "replayed 4 dead letter(s)" in replayed.stdout
    # Still poison after the replay, so back in the DLQ, each from the one agent it was
    # replayed for; a second replay sends only those.
    wait_for("the replayed letters to fail again", lambda: len(read_topic(settings, dlq)) >= 8)
    again = subprocess.run(
        [*cli, "replay", names.order_created], env=env, capture_output=True, text=True, check=True
    )
    assert "replayed 4 dead letter(s)" in again.stdout
    wait_for("the second replay to fail again", lambda: len(read_topic(settings, dlq)) >= 12)
    # Replayed to both agents, each round would have doubled: 4, 12, 28.
    agents = Counter(dict(letter.headers)[AGENT] for letter in read_topic(settings, dlq))
    assert agents == {agent.encode(): 6 for agent in readers}
