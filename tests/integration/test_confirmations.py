"""Order confirmations (a stream-table join) through two real workers: users who order
before they register have their orders held, through a SIGKILL and the rebalances around
it, then confirmed in placement order at the address they registered; an address change
holds for later orders; orders beyond the hold bound are dead-lettered as they came.
Checked against values computed from the input alone, read ``read_committed``."""

from __future__ import annotations

import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pipeline.dev.audit import decoded, read_topic
from pipeline.dev.loadgen import CONTRACT, ShopEvent, deployed_topics, order, registration
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.serde.codec import Codecs
from pipeline.streaming.dead_letters import AGENT, ERROR_CLASS, ERROR_MESSAGE
from tests.integration.conftest import StackInfo
from tests.integration.harness import owns_partitions

pytestmark = pytest.mark.integration

HOLD_BOUND = 4
LATE_USERS = [f"late-{index:02d}" for index in range(12)]
GREEDY = "greedy"  # orders six times before registering: two beyond the bound
MOVER = "mover"  # registers, orders, registers again with a new address, orders again
START_MS = 1_767_400_000_000


def placed(user: str, number: int) -> ShopEvent:
    lines = [{"sku": "CONFIRM-SKU", "quantity": 1, "unit_price_cents": 250}]
    return order(user, f"{user}-o{number:05d}", lines, START_MS + number)


def registered(user: str, email: str) -> ShopEvent:
    event = registration(user, START_MS)
    return ShopEvent(event.stream, event.key, {**event.record, "email": email})


class Feed:
    """Produces shop events as a service would (Avro, murmur2), keeping each one's bytes."""

    def __init__(self, deployed: Deployment) -> None:
        self.codecs = Codecs.from_settings(deployed.settings)
        self.codecs.prepare()
        self.topic_of = deployed_topics(deployed.names)
        self.producer = Producer(
            {**deployed.settings.kafka_client_config(), "partitioner": "murmur2_random"}
        )
        self.bytes_of: dict[str, bytes] = {}  # order id → the value sent

    def send(self, events: list[ShopEvent]) -> None:
        for event in events:
            topic = self.topic_of[event.stream]
            value = self.codecs.encode(topic, event.record)
            if event.stream == CONTRACT.order_created:
                self.bytes_of[event.record["order_id"]] = value
            self.producer.produce(topic, key=event.key.encode(), value=value)
        assert self.producer.flush(30) == 0


def joined(workers: list[WorkerProcess], outcome: str) -> float:
    return sum(
        worker.metric("pipeline_join_records_total", join="notifications", outcome=outcome)
        for worker in workers
        if worker.running()
    )


def confirmations(deployed: Deployment, codecs: Codecs) -> dict[str, list[dict[str, Any]]]:
    """Each user's confirmations, in the order of the notifications topic (one partition
    per user)."""
    topic = deployed.names.notifications
    by_user: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for note in decoded(codecs, topic, read_topic(deployed.settings, topic)):
        if note["template"] == "order_confirmed":
            by_user[note["user_id"]].append(note)
    return by_user


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_held_orders_survive_a_kill_and_are_confirmed_in_order_at_the_registered_address(
    stack: StackInfo, tmp_path: Path, guarantee: str
) -> None:
    name = f"it-confirm-{uuid.uuid4().hex[:8]}"
    deployed = Deployment(
        name=name,
        root=tmp_path,
        base_env=stack.env,
        extra_env={
            "PIPELINE_PROCESSING_GUARANTEE": guarantee,
            "PIPELINE_JOIN_HOLD_MAX_RECORDS": str(HOLD_BOUND),
        },
    )
    workers = [deployed.worker("a").start(), deployed.worker("b").start()]
    try:
        for worker in workers:
            worker.wait_healthy()
        wait_for("both workers to own partitions", lambda: all(map(owns_partitions, workers)))
        feed = Feed(deployed)
        # Orders of users nobody has seen register: every one of them is held.
        early = [placed(user, n) for n in (1, 2, 3) for user in LATE_USERS]
        early += [placed(GREEDY, n) for n in range(1, 7)]
        feed.send([registered(MOVER, "old@shop.example"), placed(MOVER, 1), *early])
        held = len(LATE_USERS) * 3 + HOLD_BOUND
        wait_for("the early orders held", lambda: joined(workers, "held") >= held)
        assert joined(workers, "refused") == 2

        # A crash while they are held: the other worker takes the partitions (and the held
        # orders in their rows), then the victim comes back on its state and takes its own.
        victim = workers[0]
        victim.kill()
        feed.send([registered(user, f"{user}@shop.example") for user in [*LATE_USERS, GREEDY]])
        workers[0] = victim.replacement().start()
        workers[0].wait_healthy()

        # The mover's new address, seen before its next order is placed.
        feed.send([registered(MOVER, "new@shop.example")])
        codecs = feed.codecs

        def welcomed_twice() -> bool:
            notes = decoded(
                codecs,
                deployed.names.notifications,
                read_topic(deployed.settings, deployed.names.notifications),
            )
            return (
                sum(1 for n in notes if n["user_id"] == MOVER and n["template"] == "welcome") >= 2
            )

        wait_for("the mover's second welcome", welcomed_twice)
        feed.send([placed(MOVER, 2)])

        wanted: dict[str, list[tuple[str, str]]] = {
            user: [(f"{user}-o{n:05d}", f"{user}@shop.example") for n in (1, 2, 3)]
            for user in LATE_USERS
        }
        wanted[GREEDY] = [
            (f"{GREEDY}-o{n:05d}", f"{GREEDY}@shop.example") for n in range(1, HOLD_BOUND + 1)
        ]
        wanted[MOVER] = [
            (f"{MOVER}-o00001", "old@shop.example"),
            (f"{MOVER}-o00002", "new@shop.example"),
        ]

        def every_confirmation() -> dict[str, list[dict[str, Any]]] | None:
            found = confirmations(deployed, codecs)
            complete = all(len(found.get(user, [])) >= len(want) for user, want in wanted.items())
            return found if complete else None

        found = wait_for("every order confirmed", every_confirmation, timeout=240)
        for user, want in wanted.items():
            notes = found[user]
            # Each distinct confirmation once, in placement order; a repeat (at-least-once
            # only) is identical to the first.
            firsts: dict[str, dict[str, Any]] = {}
            for note in notes:
                first = firsts.setdefault(note["order_id"], note)
                assert note == first, (user, note, first)
            assert [(n["order_id"], n["address"]) for n in firsts.values()] == want, user
            for note in firsts.values():
                number = int(note["order_id"].rsplit("-o", 1)[1])
                assert note["requested_at"].timestamp() * 1000 == START_MS + number
                assert (note["channel"], note["template"]) == ("email", "order_confirmed")
            if guarantee == "exactly_once":
                assert len(notes) == len(want), user

        # The greedy user's fifth and sixth orders: dead-lettered as they came, naming the user.
        dlq = deployed.names.dead_letters(deployed.names.order_created)
        letters = [
            letter
            for letter in read_topic(deployed.settings, dlq)
            if dict(letter.headers)[AGENT] == b"notifications"
        ]
        beyond = [feed.bytes_of[f"{GREEDY}-o{n:05d}"] for n in (5, 6)]
        assert {letter.value for letter in letters} == set(beyond)
        if guarantee == "exactly_once":
            assert len(letters) == 2
        for letter in letters:
            headers = dict(letter.headers)
            assert letter.key == GREEDY.encode()
            assert headers[ERROR_CLASS] == b"HoldBoundExceeded"
            assert repr(GREEDY).encode() in headers[ERROR_MESSAGE]
    finally:
        for worker in workers:
            worker.stop()


CATCHING_UP_USERS = [f"backlog-{index:02d}" for index in range(10)]
ORDERS_EACH = 5  # beyond the hold bound: none may be held for long
FILLER_REGISTRATIONS = 30_000  # more than one fetch (1 MiB) of each registrations partition


def test_a_worker_catching_up_on_a_backlog_reads_registrations_in_step_with_orders(
    stack: StackInfo, tmp_path: Path
) -> None:
    """While the service is down, many users register, then some of them order more than
    the hold bound. Read as fetched, the few orders would be read long before the late
    registrations deep in the registrations' backlog, and dead-lettered past the bound; read
    in step (by record timestamp, pipeline.streaming.read_in_step) every one is confirmed."""
    deployed = Deployment(
        name=f"it-backlog-{uuid.uuid4().hex[:8]}",
        root=tmp_path,
        base_env=stack.env,
        extra_env={
            "PIPELINE_JOIN_HOLD_MAX_RECORDS": str(HOLD_BOUND),
            # Two partitions: the backlog of each is several fetches deep.
            "PIPELINE_PARTITIONS": "2",
        },
    )
    first = deployed.worker("a").start()
    try:
        first.wait_healthy()  # the topics exist
    finally:
        first.stop()
    feed = Feed(deployed)
    feed.send(
        [registered(f"filler-{n:05d}", "f@shop.example") for n in range(FILLER_REGISTRATIONS)]
    )
    feed.send([registered(user, f"{user}@shop.example") for user in CATCHING_UP_USERS])
    feed.send([placed(user, n) for n in range(1, ORDERS_EACH + 1) for user in CATCHING_UP_USERS])

    worker = first.replacement().start()
    try:
        worker.wait_healthy()

        def every_confirmation() -> dict[str, list[dict[str, Any]]] | None:
            assert joined([worker], "refused") == 0, "orders read ahead of the registrations"
            found = confirmations(deployed, feed.codecs)
            complete = all(len(found.get(user, [])) >= ORDERS_EACH for user in CATCHING_UP_USERS)
            return found if complete else None

        found = wait_for("every order confirmed", every_confirmation, timeout=240)
        for user in CATCHING_UP_USERS:
            assert [(n["order_id"], n["address"]) for n in found[user]] == [
                (f"{user}-o{n:05d}", f"{user}@shop.example") for n in range(1, ORDERS_EACH + 1)
            ], user
        dlq = deployed.names.dead_letters(deployed.names.order_created)
        assert read_topic(deployed.settings, dlq) == []
    finally:
        worker.stop()
