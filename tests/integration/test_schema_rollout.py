"""A schema change rolled out live: orders and registrations keep flowing while

1. a v2 schema directory (``OrderCreated`` gains an optional ``coupon_code``, the derived
   ``UserOrderStats`` a ``currency`` with a default) passes ``pipeline schemas check`` and is
   registered with ``pipeline schemas register``; the same check refuses a variant whose
   ``coupon_code`` has no default, and registers nothing for it;
2. producers switch to v2 and set ``coupon_code`` (one event in four still goes out under
   v1, from a producer not upgraded yet), so workers on either version meet both;
3. the two workers are restarted one at a time onto the v2 schemas (``PIPELINE_SCHEMA_DIR``),
   each on its state dir and with its static member id, so the other worker is not
   rebalanced (docs/schema-rollout.md says why); they read v1 and v2 orders, and write
   ``user_order_stats`` under v2 with the default ``currency`` (the builder does not set it);
4. a consumer still on the v1 reader schema reads every ``user_order_stats`` record, those
   written under v1 and under v2.

Nothing is lost or dead-lettered: every DLQ is empty and the views equal what the input
implies. Users whose first order was applied before the rollout are asked through the live
workers throughout: never a 404, never a count outside what was sent, never a 5xx but a 503
with ``Retry-After``. ``-s`` prints the command outputs (the walkthrough in
docs/schema-rollout.md shows them) and the figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer

from pipeline.cli import main
from pipeline.dev import expected
from pipeline.dev.audit import read_topic
from pipeline.dev.loadgen import CONTRACT, LoadConfig, ShopEvent, deployed_topics, generate, send
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.evolution.avro_compat import compatibility_problems
from pipeline.kafka.offsets import record_count
from pipeline.serde.catalog import Catalog, default_schema_dir
from pipeline.serde.codec import Codecs, schema_id_of
from pipeline.services import shop as shop_topology
from pipeline.streaming.producer import producer_config
from tests.integration.conftest import StackInfo
from tests.integration.harness import views_match

pytestmark = pytest.mark.integration

COUPON_CODE = {
    "name": "coupon_code",
    "type": ["null", "string"],
    "default": None,
    "doc": "Coupon the user applied, if any; null for none.",
}
CURRENCY = {
    "name": "currency",
    "type": "string",
    "default": "EUR",
    "doc": "ISO 4217 code of the amounts; the shop sells in EUR only so far.",
}
RATE = 40.0  # events per second from the background producer
STILL_V1 = 4  # after the switch, one event in this many is still sent under v1
PRELOADED_USERS = 40  # users whose first order is applied before the rollout; they are polled


def schema_dir(directory: Path, changes: dict[str, dict[str, Any]]) -> Path:
    """A copy of the v1 schemas with one field appended to each record file named."""
    shutil.copytree(default_schema_dir(), directory)
    for record_file, new_field in changes.items():
        path = directory / record_file
        schema = json.loads(path.read_text())
        schema["fields"].append(new_field)
        path.write_text(json.dumps(schema, indent=2) + "\n")
    return directory


def run_schemas(stack: StackInfo, prefix: str, *args: str) -> tuple[int, str]:
    """``pipeline schemas --topic-prefix PREFIX ARGS``: exit code and output, printed as a
    console transcript without the prefix (as the walkthrough shows it)."""
    result = CliRunner().invoke(
        main, ["schemas", "--topic-prefix", prefix, *args], env=stack.env, catch_exceptions=False
    )
    # Directories by name: the walkthrough runs from the folder that holds them.
    shown = " ".join(Path(arg).name if arg.startswith("/") else arg for arg in args)
    print(
        f"$ pipeline schemas {shown}\n{result.output.replace(prefix, '')}[exit {result.exit_code}]"
    )
    return result.exit_code, result.output


class PacedProducer(threading.Thread):
    """Sends ``events`` at RATE per second until stopped, with the v1 codecs until
    ``switch_to`` gives it the v2 ones. From then on it stands for the shop's producers in
    the middle of their own upgrade: every STILL_V1-th event still goes out under v1, the
    rest under v2, each v2 order with a ``coupon_code``."""

    def __init__(self, events: Iterator[ShopEvent], v1: Codecs, deployment: Deployment):
        super().__init__(name="paced-producer", daemon=True)
        self.events = events
        self.v1 = v1
        self.v2: Codecs | None = None
        self.topics = deployed_topics(deployment.names)
        self.producer = Producer(producer_config(deployment.settings))
        self.sent: list[ShopEvent] = []
        self.v2_orders: set[str] = set()  # order ids sent under v2
        self.failures: list[str] = []
        self.error: BaseException | None = None
        self.stopping = threading.Event()

    def switch_to(self, v2: Codecs) -> None:
        self.v2 = v2

    def run(self) -> None:
        try:
            started = time.monotonic()
            for count, event in enumerate(self.events, start=1):
                if self.stopping.is_set():
                    break
                codecs = self.v2 if self.v2 is not None and count % STILL_V1 else self.v1
                if codecs is self.v2 and event.stream == CONTRACT.order_created:
                    event = replace(event, record={**event.record, "coupon_code": f"C{count % 7}"})
                    self.v2_orders.add(event.record["order_id"])
                topic = self.topics[event.stream]
                self.producer.produce(
                    topic,
                    key=event.key.encode(),
                    value=codecs.encode(topic, event.record),
                    on_delivery=self.delivered,
                )
                self.sent.append(event)
                self.producer.poll(0)
                time.sleep(max(0.0, count / RATE - (time.monotonic() - started)))
            self.producer.flush(30)
        except BaseException as exc:  # re-raised by finish() in the test's thread
            self.error = exc

    def delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(str(error))

    def finish(self) -> list[ShopEvent]:
        """Stop, wait for every acknowledgement; the events sent."""
        self.stopping.set()
        self.join(60)
        if self.error is not None:
            raise self.error
        assert not self.failures, self.failures[:5]
        return self.sent


def get(url: str) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            status, headers, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, payload = error.code, error.headers, error.read()
    return status, dict(headers), json.loads(payload) if payload else None


class Poller(threading.Thread):
    """Asks each polled user's orders through the live workers in turn, twice a second,
    and sorts every answer by kind."""

    def __init__(self, users: dict[str, int], live: list[WorkerProcess]) -> None:
        super().__init__(name="view-poller", daemon=True)
        self.users = users  # user -> orders applied before the rollout
        self.live = live  # the main thread removes a worker before stopping it
        self.kinds = Counter[str]()
        self.highest: dict[str, int] = {}
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            turn = itertools.count()
            while not self.stopping.is_set():
                for user, preloaded in self.users.items():
                    workers = list(self.live)
                    self.ask(workers[next(turn) % len(workers)], user, preloaded)
                self.stopping.wait(0.5)
        except BaseException as exc:  # re-raised by finish() in the test's thread
            self.error = exc

    def ask(self, worker: WorkerProcess, user: str, preloaded: int) -> None:
        try:
            status, headers, body = get(f"{worker.url}/users/{user}/orders")
        except OSError:
            # Only a worker taken out of the rotation (being stopped) may fail to answer.
            self.kinds[
                "no answer, worker stopping" if worker not in self.live else "WRONG: no answer"
            ] += 1
            return
        if status == 200:
            count = body["order_count"]
            self.highest[user] = max(self.highest.get(user, 0), count)
            copy = headers.get("X-Pipeline-Copy") == "copy"
            if count >= preloaded:
                self.kinds["200 from a copy" if copy else "200 from the owner"] += 1
            elif copy and headers.get("X-Pipeline-Copy-Lag") != "0":
                self.kinds["200 from a copy, behind (it says so)"] += 1
            else:
                self.kinds["200 WRONG (fewer orders than preloaded)"] += 1
        elif status == 503 and "Retry-After" in headers:
            self.kinds["503 with Retry-After"] += 1
        else:
            self.kinds[f"{status} WRONG"] += 1

    def finish(self) -> Counter[str]:
        self.stopping.set()
        self.join(60)
        if self.error is not None:
            raise self.error
        return self.kinds


def decode_all(codecs: Codecs, topic: str, values: list[bytes]) -> list[dict[str, Any]]:
    """Each value decoded into ``codecs``' reader schema, writer schemas fetched by id."""

    async def decode() -> list[dict[str, Any]]:
        return [await codecs.decode(topic, value) for value in values]

    return asyncio.run(decode())


def test_a_compatible_schema_change_rolls_out_while_events_flow(
    stack: StackInfo, tmp_path: Path
) -> None:
    name = f"it-rollout-{uuid.uuid4().hex[:8]}"
    shop = Deployment(
        name=name,
        root=tmp_path / name,
        base_env=stack.env,
        # The explicit workflow: workers only look their schema ids up.
        extra_env={"PIPELINE_AUTO_REGISTER_SCHEMAS": "false", "PIPELINE_STANDBY_REPLICAS": "1"},
    )
    prefix, settings, names = f"{name}.", shop.settings, shop.names
    v2_dir = schema_dir(
        tmp_path / "schemas-v2",
        {"OrderCreated.avsc": COUPON_CODE, "UserOrderStats.avsc": CURRENCY},
    )
    no_default = {key: value for key, value in COUPON_CODE.items() if key != "default"}
    broken_dir = schema_dir(tmp_path / "schemas-v2-broken", {"OrderCreated.avsc": no_default})
    v1 = Codecs.from_settings(settings)
    v2 = Codecs.from_settings(settings, Catalog.load(v2_dir, topic_prefix=prefix))

    print()
    assert run_schemas(stack, prefix, "register")[0] == 0  # the first deploy: v1 of everything
    v1.prepare()
    # A stream where about one order in ten comes from a newly registered user.
    stream = generate(LoadConfig(users=10_000, orders=100_000, skus=30, seed=61))
    preload: list[ShopEvent] = []
    ordered: Counter[str] = Counter()
    while len(ordered) < PRELOADED_USERS:
        event = next(stream)
        preload.append(event)
        if event.stream == CONTRACT.order_created:
            ordered[event.key] += 1

    # Static membership (PIPELINE_WORKER_ID): a worker restarted with its id gets its
    # partitions back without a rebalance, so the other worker never gives its up.
    first = shop.worker("first", worker_id="first").start()
    second = shop.worker("second", worker_id="second").start()
    every_worker = [first, second]  # each stopped at the end, whatever happens
    live = [first, second]  # the workers the poller asks
    try:
        for worker in live:
            worker.wait_healthy()
        assert send(preload, settings, progress=False).failed == 0
        for worker in live:
            wait_for("the preloaded views", lambda w=worker: views_match(w, preload), timeout=90)

        producer = PacedProducer(stream, v1, shop)
        poller = Poller(dict(ordered), live)
        restarts: list[float] = []
        started = time.monotonic()
        producer.start()
        poller.start()
        try:
            # 1. Check and register v2; the variant without a default is refused.
            code, output = run_schemas(stack, prefix, "--schemas-dir", str(broken_dir), "check")
            assert code == 1
            assert "field coupon_code is missing from the writer's schema and has no default" in (
                output
            )
            code, output = run_schemas(stack, prefix, "--schemas-dir", str(v2_dir), "check")
            assert code == 0
            assert output.count(": compatible, under BACKWARD_TRANSITIVE") == 2, output
            code, output = run_schemas(stack, prefix, "--schemas-dir", str(v2_dir), "register")
            assert code == 0
            assert output.count("registered version 2") == 2, output
            # Producers go first here, so v1 readers meet v2 data: the change is forward
            # compatible too (BACKWARD_TRANSITIVE alone would not promise that).
            for topic in (names.order_created, names.user_order_stats):
                old, new = v1[topic].topic_schema.schema, v2[topic].topic_schema.schema
                assert compatibility_problems("FULL", new, [(1, old)]) == []

            # 2. Producers send v2.
            v2.prepare()
            producer.switch_to(v2)

            # 3. One worker at a time onto the v2 reader schema, each on its state dir.
            for index, worker in enumerate(list(live)):
                time.sleep(5)  # v2 orders reach the v1 worker first
                live.remove(worker)
                stopped_at = time.monotonic()
                worker.stop()
                env = {**worker.env, "PIPELINE_SCHEMA_DIR": str(v2_dir)}
                upgraded = replace(worker.replacement(), env=env).start()
                every_worker.append(upgraded)
                live.insert(index, upgraded.wait_healthy())
                restarts.append(time.monotonic() - stopped_at)
            time.sleep(5)  # both workers on v2 for a while
        finally:
            events = preload + producer.finish()
            kinds = poller.finish()
        rollout_s = time.monotonic() - started

        for worker in live:
            wait_for("the final views", lambda w=worker: views_match(w, events), timeout=90)
        assert_no_dead_letters(shop)
        check_orders(shop, v1, v2, producer.v2_orders)
        stats = check_user_order_stats(shop, v1, v2, events, producer.v2_orders)
    finally:
        for worker in every_worker:
            worker.stop()

    sent = Counter(event.stream for event in events)
    print(
        f"\nrollout: {len(events)} events ({len(preload)} preloaded, then {RATE:.0f}/s for "
        f"{rollout_s:.0f} s): {dict(sent)}; orders under v2: {len(producer.v2_orders)}; "
        f"restarts (stop to healthy): {', '.join(f'{s:.1f} s' for s in restarts)}; "
        f"user_order_stats records: {stats}; answers polled: {dict(kinds)}"
    )
    assert len(restarts) == 2
    wrong = {kind: count for kind, count in kinds.items() if "WRONG" in kind}
    assert not wrong, kinds
    assert kinds["200 from the owner"] > 0
    final = expected.user_stats(events)
    assert all(poller.highest.get(user, 0) <= final[user].order_count for user in ordered)


def assert_no_dead_letters(shop: Deployment) -> None:
    settings = shop.settings
    consumer = Consumer({**settings.kafka_client_config(), "group.id": f"{shop.name}-dlq"})
    try:
        for source in shop_topology(settings).sources:
            assert record_count(consumer, shop.names.dead_letters(source)) == 0, source
    finally:
        consumer.close()


def check_orders(shop: Deployment, v1: Codecs, v2: Codecs, v2_orders: set[str]) -> None:
    """order_created holds v1 and v2 orders; the v2 reader reads both, with coupon_code null
    exactly on the orders sent under v1."""
    topic = shop.names.order_created
    orders = [record.value or b"" for record in read_topic(shop.settings, topic)]
    assert {schema_id_of(value) for value in orders} == {v1[topic].schema_id, v2[topic].schema_id}
    with_coupon = {
        order["order_id"] for order in decode_all(v2, topic, orders) if order["coupon_code"]
    }
    assert with_coupon == v2_orders


def check_user_order_stats(
    shop: Deployment, v1: Codecs, v2: Codecs, events: list[ShopEvent], v2_orders: set[str]
) -> dict[str, int]:
    """user_order_stats was written under v1 and (after the restarts) under v2, with the
    default currency; a v1 reader reads all of it, a record for every order. Workers on v1
    applied v2 orders, and workers on v2 applied v1 orders. The figures, by what they count."""
    topic = shop.names.user_order_stats
    stats = [record.value or b"" for record in read_topic(shop.settings, topic)]
    v1_id, v2_id = v1[topic].schema_id, v2[topic].schema_id
    assert {schema_id_of(value) for value in stats} == {v1_id, v2_id}
    as_v1 = decode_all(v1, topic, stats)
    assert all("currency" not in record for record in as_v1)
    every_order = {
        order_id
        for user in expected.user_stats(events).values()
        for order_id in user.order_ids or []
    }
    assert {record["last_order_id"] for record in as_v1} == every_order
    as_v2 = decode_all(v2, topic, [value for value in stats if schema_id_of(value) == v2_id])
    assert {record["currency"] for record in as_v2} == {"EUR"}
    figures = Counter[str]()
    for value, record in zip(stats, as_v1, strict=True):
        writer = "v1" if schema_id_of(value) == v1_id else "v2"
        order = "v2" if record["last_order_id"] in v2_orders else "v1"
        figures[f"written under {writer} for a {order} order"] += 1
    assert figures["written under v1 for a v2 order"] > 0
    assert figures["written under v2 for a v1 order"] > 0
    return dict(sorted(figures.items()))
