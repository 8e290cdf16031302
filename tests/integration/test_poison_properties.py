"""Thousands of generated poison messages through the broker into one real worker.

Hypothesis generates the bad values (random bytes, wrong magic byte, short frames, unknown
schema ids, truncated Avro, Avro with bytes left over, valid Avro of another topic's schema
under either id, tombstones) and keys that are not UTF-8; they are produced with
confluent-kafka (murmur2) to the three input topics, interleaved with a good stream. Each bad
message must land in ``<topic>.dlq`` unchanged with the reason a local decode gives, every
good one must be processed, and the worker must stay up. Under both guarantees: under
exactly_once every dead letter is committed with its source event's offset, and each is in
its topic exactly once (read with read_committed). And a worker SIGKILLed among them, then
restarted on its state dir, ends with the tables of the good stream alone.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.dev import expected
from pipeline.dev.audit import read_topic
from pipeline.dev.loadgen import (
    CONTRACT,
    LoadConfig,
    ShopEvent,
    deployed_topics,
    generate,
)
from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from pipeline.kafka.offsets import watermarks
from pipeline.serde.codec import Codecs, frame
from pipeline.serde.errors import PipelineCodecError
from pipeline.services import shop
from pipeline.streaming.dead_letters import (
    AGENT,
    ATTEMPTS,
    ERROR_CLASS,
    SOURCE_OFFSET,
    SOURCE_TOPIC,
)
from tests.integration.conftest import StackInfo
from tests.integration.exactly_once import assert_derived_exact
from tests.integration.harness import deployment, views_match

pytestmark = pytest.mark.integration

BAD_MESSAGES = 2000
# Fewer where a worker is killed among them: the restart is the point there.
KILLED_BAD_MESSAGES = 300
STREAMS = (CONTRACT.user_registered, CONTRACT.order_created, CONTRACT.stock_adjusted)

TEXT = st.text(max_size=12)
MILLIS = st.integers(0, 2**41)
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
RECORDS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    CONTRACT.user_registered: st.fixed_dictionaries(
        {"user_id": TEXT, "email": TEXT, "name": TEXT, "registered_at": MILLIS}
    ),
    CONTRACT.order_created: st.fixed_dictionaries(
        {
            "order_id": TEXT,
            "user_id": TEXT,
            "items": st.lists(
                st.fixed_dictionaries({"sku": TEXT, "quantity": INT32, "unit_price_cents": INT64}),
                max_size=3,
            ),
            "total_cents": INT64,
            "created_at": MILLIS,
        }
    ),
    CONTRACT.stock_adjusted: st.fixed_dictionaries(
        {"sku": TEXT, "delta": INT32, "reason": TEXT, "adjusted_at": MILLIS}
    ),
}
NOT_UTF8_KEYS = st.binary(min_size=1, max_size=16).filter(lambda key: not _is_utf8(key))


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@dataclass(frozen=True)
class Poison:
    stream: str
    key: bytes
    value: bytes | None
    reason: str  # the error class a local decode gives (or the key's)


def poison_strategy(codecs: Codecs, topic_of: dict[str, str]) -> st.SearchStrategy[Any]:
    """(stream, value, key or None): a bad value, or a good value under a bad key."""

    def encoded(stream: str, record: dict[str, Any]) -> bytes:
        return codecs.encode(topic_of[stream], record)

    streams = st.sampled_from(STREAMS)
    valid = streams.flatmap(
        lambda stream: RECORDS[stream].map(lambda record: (stream, encoded(stream, record)))
    )
    truncated = valid.flatmap(
        lambda pair: st.integers(0, len(pair[1]) - 1).map(lambda cut: pair[1][:cut])
    )
    left_over = st.tuples(valid, st.binary(min_size=1, max_size=8)).map(
        lambda pair: pair[0][1] + pair[1]
    )
    # Valid Avro of one topic's record, under its own id or with the id swapped for another's.
    wrong_schema = st.tuples(valid, streams).map(
        lambda pair: (
            pair[0][1]
            if pair[1] == pair[0][0]
            else frame(codecs[topic_of[pair[1]]].schema_id or 0, pair[0][1][5:])
        )
    )
    kinds = [
        st.binary(max_size=64),
        st.binary(max_size=4),
        st.tuples(st.integers(1, 255), st.binary(max_size=40)).map(
            lambda pair: bytes([pair[0]]) + pair[1]
        ),
        st.tuples(st.integers(10**8, 2**31 - 1), st.binary(max_size=40)).map(
            lambda pair: frame(pair[0], pair[1])
        ),
        truncated,
        left_over,
        wrong_schema,
        st.none(),
    ]
    # Each kind equally often (one_of would favour some), and one case in ten a bad key.
    values = st.sampled_from(kinds).flatmap(lambda kind: kind)
    bad_values = st.tuples(streams, values, st.none())
    # Agents decode keys as text: a good order or adjustment under a key that is not UTF-8.
    bad_keys = st.sampled_from((CONTRACT.order_created, CONTRACT.stock_adjusted)).flatmap(
        lambda stream: st.tuples(
            st.just(stream), RECORDS[stream].map(lambda r: encoded(stream, r)), NOT_UTF8_KEYS
        )
    )
    return st.integers(0, 9).flatmap(lambda n: bad_keys if n == 0 else bad_values)


def local_refusal(codecs: Codecs, topic: str, value: bytes | None) -> str | None:
    """The error class the worker's decode path must give, or None if the value decodes."""
    try:
        asyncio.run(codecs.decode(topic, value))
    except PipelineCodecError as error:
        return error.error_class
    return None


def generate_poison(codecs: Codecs, topic_of: dict[str, str], count: int) -> list[Poison]:
    found: list[Poison] = []

    @settings(
        # Nearly every example is poison (the few that decode are dropped); each example
        # costs time even when not kept, so ask for few more than needed.
        max_examples=count + count // 10,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=poison_strategy(codecs, topic_of))
    def collect(case: tuple[str, bytes | None, bytes | None]) -> None:
        if len(found) >= count:
            return
        stream, value, bad_key = case
        key = f"poison-{len(found):05d}".encode()
        if bad_key is not None:
            found.append(Poison(stream, bad_key + key, value, "UndecodableKey"))
            return
        reason = local_refusal(codecs, topic_of[stream], value)
        if reason is not None:  # a generated value may, rarely, decode: not poison then
            found.append(Poison(stream, key, value, reason))

    collect()
    return found


@dataclass(frozen=True)
class Letter:
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass
class Thrown:
    deployment: Deployment
    worker: WorkerProcess
    poison: list[Poison]
    good: list[ShopEvent]
    seconds: float


def mixed(good: list[ShopEvent], poison: list[Poison], seed: int) -> list[Poison | ShopEvent]:
    """Bad messages at random places; the good ones keep their order."""
    rng = random.Random(seed)
    stream: list[Poison | ShopEvent] = [*good]
    for bad in poison:
        stream.insert(rng.randrange(len(stream) + 1), bad)
    return stream


def produce(deployed: Deployment, codecs: Codecs, stream: list[Poison | ShopEvent]) -> None:
    """Every message of ``stream`` to its topic (murmur2, as the shop's producers)."""
    topic_of = deployed_topics(deployed.names)
    producer = Producer(
        {**deployed.settings.kafka_client_config(), "partitioner": "murmur2_random"}
    )
    for item in stream:
        if isinstance(item, Poison):
            producer.produce(topic_of[item.stream], key=item.key, value=item.value)
        else:
            topic = topic_of[item.stream]
            producer.produce(topic, key=item.key.encode(), value=codecs.encode(topic, item.record))
        producer.poll(0)
    assert producer.flush(60) == 0


@pytest.fixture(scope="module", params=["at_least_once", "exactly_once"])
def thrown(
    stack: StackInfo, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Thrown]:
    name = f"it-poison-{uuid.uuid4().hex[:8]}"
    deployed = deployment(stack, name, tmp_path_factory.mktemp(name), request.param)
    worker = deployed.worker("w").start()
    try:
        worker.wait_healthy()
        codecs = Codecs.from_settings(deployed.settings)
        codecs.prepare()
        names = deployed.names
        topic_of = deployed_topics(names)
        began = time.monotonic()
        poison = generate_poison(codecs, topic_of, BAD_MESSAGES)
        print(f"\ngenerated in {time.monotonic() - began:.1f} s")
        good = list(generate(LoadConfig(users=40, orders=400, skus=15, restock_every=8, seed=23)))
        stream = mixed(good, poison, seed=5)
        started = time.monotonic()
        produce(deployed, codecs, stream)
        yield Thrown(deployed, worker, poison, good, started)
    finally:
        worker.stop()


def dead_letters(deployed: Deployment) -> list[Letter]:
    """Every record of the three dead-letter topics, read with one consumer (quick for
    thousands of records)."""
    names, settings = deployed.names, deployed.settings
    topic_of = deployed_topics(names)
    topics = [names.dead_letters(topic_of[stream]) for stream in STREAMS]
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "poison-reader",
            "enable.auto.commit": False,
            # To each partition's end, which may be a transaction marker (never delivered).
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    try:
        pending = {
            (topic, partition)
            for topic in topics
            for partition, (low, high) in watermarks(consumer, topic).items()
            if high > low
        }
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic, p in pending])
        letters: list[Letter] = []
        deadline = time.monotonic() + 120
        while pending:
            assert time.monotonic() < deadline, "dead-letter topics did not read to their end"
            for message in consumer.consume(1000, timeout=1):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard((message.topic() or "", message.partition() or 0))
                    continue
                assert error is None, error
                found = message.headers() or []
                pairs = list(found.items()) if isinstance(found, dict) else list(found)
                headers = {
                    name: value.encode() if isinstance(value, str) else (value or b"")
                    for name, value in pairs
                }
                letters.append(Letter(message.key(), message.value(), headers))
        return letters
    finally:
        consumer.close()


Tally = Counter[tuple[str, str, bytes | None, bytes | None, str]]


def sent(deployed: Deployment, poison: list[Poison]) -> Tally:
    """(source topic, agent, key, value, reason) of every bad message sent, once for each
    agent reading its topic (each dead-letters it)."""
    topic_of = deployed_topics(deployed.names)
    readers = shop(deployed.settings).readers
    return Counter(
        (topic_of[bad.stream], agent, bad.key, bad.value, bad.reason)
        for bad in poison
        for agent in readers[topic_of[bad.stream]]
    )


def tally(letters: list[Letter]) -> Tally:
    """(source topic, agent, key, value, reason) of every dead letter; each one tried once
    (the same bytes never decode)."""
    received: Tally = Counter()
    for letter in letters:
        headers = letter.headers
        assert headers[ATTEMPTS] == b"1"
        assert int(headers[SOURCE_OFFSET]) >= 0
        source, agent = headers[SOURCE_TOPIC].decode(), headers[AGENT].decode()
        reason = headers[ERROR_CLASS].decode()
        received[(source, agent, letter.key, letter.value, reason)] += 1
    return received


def record_count(thrown: Thrown, topic: str) -> int:
    """Committed records (transaction markers take offsets too)."""
    return len(read_topic(thrown.deployment.settings, topic))


def dead_lettered(thrown: Thrown) -> float:
    """The worker's count of dead letters, over every (topic, reason) thrown."""
    topic_of = deployed_topics(thrown.deployment.names)
    return sum(
        thrown.worker.metric(
            "pipeline_dead_letters_total", topic=topic_of[stream], error_class=reason
        )
        for stream, reason in {(bad.stream, bad.reason) for bad in thrown.poison}
    )


def test_every_poison_message_is_dead_lettered_unchanged_with_its_reason(
    thrown: Thrown,
) -> None:
    # A generated value that happens to decode is not poison and is dropped: a handful.
    assert len(thrown.poison) >= BAD_MESSAGES * 0.95
    kinds = Counter(bad.reason for bad in thrown.poison)
    # The generator reached every way of being bad.
    assert set(kinds) >= {
        "NotConfluentFraming",
        "UnknownSchemaId",
        "UndecodableRecord",
        "IncompatibleWriterSchema",
        "UndecodableKey",
    }, kinds
    letters_wanted = sent(thrown.deployment, thrown.poison)
    wait_for(
        f"{letters_wanted.total()} dead letters counted",
        lambda: dead_lettered(thrown) >= letters_wanted.total(),
        timeout=300,
    )
    print(f"\ndead-lettered {time.monotonic() - thrown.seconds:.1f} s after the first was sent")

    def every_letter_readable() -> list[Letter] | None:
        # Under exactly_once a dead letter is counted once it joins the open transaction,
        # and a read_committed reader sees it only once that transaction has committed.
        letters = dead_letters(thrown.deployment)
        return letters if len(letters) >= letters_wanted.total() else None

    letters = wait_for("every dead letter readable", every_letter_readable, timeout=60)
    assert tally(letters) == letters_wanted


def test_every_good_message_is_processed_and_the_worker_stays_up(thrown: Thrown) -> None:
    wait_for("the views to match the good stream", lambda: views_match(thrown.worker, thrown.good))
    names = thrown.deployment.names
    notifications = expected.notifications(thrown.good).total()
    wait_for(
        "a welcome per registration and a confirmation per order",
        lambda: record_count(thrown, names.notifications) >= notifications,
    )
    assert record_count(thrown, names.notifications) == notifications
    assert record_count(thrown, names.stock_levels) == expected.stock_changes(thrown.good)
    assert thrown.worker.running()
    assert thrown.worker.get("/health")[0] == 200
    dead = dead_lettered(thrown)
    assert dead == sent(thrown.deployment, thrown.poison).total()
    print(
        f"\n{len(thrown.poison)} bad {dict(Counter(b.reason for b in thrown.poison))}, "
        f"{len(thrown.good)} good messages handled "
        f"{time.monotonic() - thrown.seconds:.1f} s after the first was sent"
    )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_worker_killed_among_poison_ends_with_the_clean_stream_s_tables_and_every_letter(
    stack: StackInfo, tmp_path: Path, guarantee: str
) -> None:
    """Half the mixed stream, a SIGKILL once the worker is into it, the other half, and a
    restart on the same state dir: the views equal those of the good stream alone, the
    derived topics miss nothing (and repeat nothing under exactly_once), and the dead-letter
    topics hold every bad message: once under exactly_once, at least once otherwise (a
    batch settled but not committed when the worker died is dead-lettered again)."""
    name = f"it-poison-kill-{uuid.uuid4().hex[:8]}"
    deployed = deployment(stack, name, tmp_path, guarantee)
    codecs = Codecs.from_settings(deployed.settings)
    codecs.prepare()
    poison = generate_poison(codecs, deployed_topics(deployed.names), KILLED_BAD_MESSAGES)
    good = list(generate(LoadConfig(users=30, orders=300, skus=12, restock_every=8, seed=29)))
    stream = mixed(good, poison, seed=11)
    half = len(stream) // 2
    victim = deployed.worker("victim").start()
    try:
        victim.wait_healthy()
        produce(deployed, codecs, stream[:half])
        order_topic = deployed.names.order_created
        wait_for(
            "the victim to be into the stream",
            lambda: victim.metric("pipeline_events_processed_total", topic=order_topic) >= 50,
        )
        victim.kill()
        produce(deployed, codecs, stream[half:])
        survivor = deployed.worker("survivor", data_dir=victim.data_dir).start()
        try:
            survivor.wait_healthy()
            wait_for("the survivor's views", lambda: views_match(survivor, good))
            expected_letters = sent(deployed, poison)

            def every_letter() -> Tally | None:
                received = tally(dead_letters(deployed))
                return received if set(received) >= set(expected_letters) else None

            received = wait_for("every bad message dead-lettered", every_letter, timeout=120)
            assert set(received) == set(expected_letters)
            if guarantee == "exactly_once":
                assert received == expected_letters
            repeated = sum((received - expected_letters).values())
            print(f"\n{guarantee}: {len(poison)} bad, {repeated} dead-lettered again")
            assert_derived_exact(deployed.settings, good, guarantee, f"{guarantee}, killed")
        finally:
            survivor.stop()
    finally:
        victim.kill()
