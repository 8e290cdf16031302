"""The latency probe: a consumer in a process of its own that notes when each record arrives,
and the paced producer that offers the orders it times.

The probe polls one message at a time (``poll(0.01)``) and takes the wall-clock time as
soon as ``poll`` returns, before decoding anything. (``consume(num_messages=N,
timeout=T)`` returns only once N messages arrived or T passed, so a probe built on it
adds up to T to every figure.) It runs in a process of its own so that neither the paced
producer nor whatever decodes in the bench process holds its GIL; it reads with fastavro
and the schemas in ``schemas/`` (timestamps as plain longs), and needs no registry.

What it notes, per kind of topic:

- ``order`` (order_created): the first arrival of each ``order_id``: the broker round
  trip of the input itself, under the same load (the transport baseline);
- ``stats`` (user_order_stats): the first arrival of each ``last_order_id``;
- ``level`` (stock_levels): every arrival, by ``updated_at``, which is the order's
  ``created_at``: the bench makes ``created_at`` unique per order (1 ms apart), so an
  order's stock levels are the ones with its ``created_at``;
- ``confirm`` (notifications): the first arrival of each ``order_id``, its confirmation
  (welcomes, with no order id, are neither noted nor counted);
- ``raw``: the first arrival of each value, read as text: :func:`round_trip`'s messages.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from fastavro import parse_schema, schemaless_reader

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
KINDS = ("order", "stats", "level", "confirm", "raw")
AVSC = {
    "order": "OrderCreated.avsc",
    "stats": "UserOrderStats.avsc",
    "level": "StockLevel.avsc",
    "confirm": "NotificationRequested.avsc",
}
ID_FIELD = {
    "order": "order_id",
    "stats": "last_order_id",
    "level": "updated_at",
    "confirm": "order_id",
}
# How long the probe process may take to start; how long it polls before it says it is
# ready (its fetch sessions set up).
START_TIMEOUT = 60.0
SETTLE = 1.0


def _plain(schema: Any) -> Any:
    """The schema without logical types: timestamps decode as the longs that were written."""
    if isinstance(schema, dict):
        return {k: _plain(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [_plain(item) for item in schema]
    return schema


def _reader(kind: str) -> Callable[[bytes], Any]:
    """The id a message of ``kind`` is noted under (None: not noted)."""
    if kind == "raw":
        return lambda value: value.decode()
    schema = parse_schema(_plain(json.loads((SCHEMAS / AVSC[kind]).read_text())))
    field_name = ID_FIELD[kind]

    def read(value: bytes) -> Any:
        stream = io.BytesIO(value)
        stream.seek(5)  # Confluent framing: magic byte and schema id
        record: dict[str, Any] = schemaless_reader(stream, schema, None)  # type: ignore[assignment]
        return record[field_name]

    return read


@dataclass
class Arrivals:
    """Wall-clock arrival times (time.time()) the probe noted, by kind and id."""

    first: dict[str, dict[str, float]] = field(default_factory=dict)
    levels: dict[int, list[float]] = field(default_factory=dict)

    def of(self, kind: str) -> dict[str, float]:
        return self.first.get(kind, {})

    def level_times(self, created_at_ms: int) -> list[float]:
        """Arrivals of the stock levels written for the order created at ``created_at_ms``."""
        return self.levels.get(created_at_ms, [])


def _watch(
    config: dict[str, Any],
    assignments: list[tuple[str, int]],
    kinds: dict[str, str],
    counts: Any,
    ready: Event,
    stopping: Event,
    results: Connection,
) -> None:
    """The probe process: poll one message at a time until ``stopping``; send the
    :class:`Arrivals` back through ``results``."""
    consumer = Consumer(
        {
            **config,
            "group.id": f"bench-probe-{os.getpid()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 5,
            # What a downstream service sees: exactly-once outputs once committed (the same
            # as read_uncommitted for records written outside transactions).
            "isolation.level": "read_committed",
        }
    )
    # Explicit start offsets (each partition's low watermark): fetching starts at once,
    # with no offset reset to look up first.
    partitions = [
        TopicPartition(t, p, consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)[0])
        for t, p in assignments
    ]
    consumer.assign(partitions)
    readers = {topic: _reader(kind) for topic, kind in kinds.items()}
    slots = {topic: KINDS.index(kind) for topic, kind in kinds.items()}
    arrivals = Arrivals({kind: {} for kind in kinds.values() if kind != "level"})
    first = {topic: arrivals.first.get(kind, {}) for topic, kind in kinds.items()}
    levels = {topic for topic, kind in kinds.items() if kind == "level"}
    polling_since = time.monotonic()
    try:
        while not stopping.is_set():
            message = consumer.poll(0.01)
            if not ready.is_set() and time.monotonic() - polling_since > SETTLE:
                ready.set()
            if message is None:
                continue
            now = time.time()
            topic = message.topic()
            if message.error() is not None or topic is None:
                continue
            key = readers[topic](message.value() or b"")
            if key is None:
                continue
            if topic in levels:
                arrivals.levels.setdefault(key, []).append(now)
            else:
                first[topic].setdefault(key, now)
            counts[slots[topic]] += 1
        results.send(arrivals)
    finally:
        consumer.close()


class Probe:
    """The probe process over ``topics`` (topic → kind), reading each from its beginning,
    with ``config`` (the Kafka client settings).

    ``start()`` returns once it has polled for ``SETTLE`` seconds; ``seen(kind)`` is how many
    messages of that kind it read so far; ``stop()`` ends it and returns what it noted.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topics: Mapping[str, str],
        partitions: Callable[[str], Iterable[int]],
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self._counts = context.Array("q", len(KINDS), lock=False)
        self._ready = context.Event()
        self._stopping = context.Event()
        self._results, child = context.Pipe(duplex=False)
        assignments = [(topic, p) for topic in topics for p in partitions(topic)]
        self._process = context.Process(
            target=_watch,
            args=(dict(config), assignments, dict(topics), self._counts, self._ready),
            kwargs={"stopping": self._stopping, "results": child},
            daemon=True,
        )

    def start(self) -> Probe:
        self._process.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready.wait(0.1):
            if not self._process.is_alive():
                raise RuntimeError(f"the probe exited ({self._process.exitcode})")
            if time.monotonic() > deadline:
                self._process.kill()
                raise TimeoutError(f"the probe was not fetching within {START_TIMEOUT:.0f} s")
        return self

    def seen(self, kind: str) -> int:
        return int(self._counts[KINDS.index(kind)])

    def stop(self) -> Arrivals:
        self._stopping.set()
        if not self._results.poll(60):
            self._process.kill()
            raise RuntimeError("the probe sent no results within 60 s")
        arrivals: Arrivals = self._results.recv()
        self._process.join(30)
        return arrivals


@dataclass(frozen=True)
class Percentiles:
    """Latencies in ms; an event that never arrived counts as infinitely late."""

    p50: float
    p99: float
    max: float
    count: int
    missing: int = 0

    @classmethod
    def of(cls, values: Sequence[float], missing: int = 0) -> Percentiles:
        ordered = sorted(values) + [float("inf")] * missing
        if not ordered:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), p99, ordered[-1], len(values), missing)

    def text(self) -> str:
        lost = f" ({self.missing:,} not arrived)" if self.missing else ""
        return f"p50 {ms(self.p50)} / p99 {ms(self.p99)} / max {ms(self.max)} ms{lost}"


def ms(value: float) -> str:
    return "never" if value == float("inf") else f"{value:,.1f}" if value < 10 else f"{value:,.0f}"


def latencies(sent: Mapping[str, float], arrived: Mapping[str, float]) -> Percentiles:
    """Arrival minus send time of each id sent, in ms."""
    values = [(arrived[i] - t) * 1000 for i, t in sent.items() if i in arrived]
    return Percentiles.of(values, missing=len(sent) - len(values))


@dataclass(frozen=True)
class Offer:
    """Messages produced at a fixed rate: id → wall-clock send time (taken just before
    ``produce()``)."""

    sent: dict[str, float]
    seconds: float


def offer(
    config: Mapping[str, Any],
    topic: str,
    messages: Sequence[tuple[str, bytes, bytes]],
    rate: float,
) -> Offer:
    """Produce (id, key, value) ``messages`` at ``rate``/s, each at its scheduled time (the
    loop sleeps until then; late ones go out at once): a steady stream, not a backlog."""
    producer = Producer(dict(config))
    sent: dict[str, float] = {}
    started = time.monotonic()
    for index, (ident, key, value) in enumerate(messages):
        ahead = started + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        sent[ident] = time.time()
        while True:
            try:
                producer.produce(topic, key=key, value=value)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    seconds = time.monotonic() - started
    producer.flush()
    return Offer(sent, seconds)


def round_trip(
    client: Mapping[str, Any],
    producer: Mapping[str, Any],
    topic: str,
    partitions: Callable[[str], Iterable[int]],
    rate: float = 200.0,
    seconds: float = 10.0,
) -> Percentiles:
    """The probe's own floor: short raw messages produced (with ``producer``'s settings) at
    ``rate`` to an empty ``topic`` and read back by the probe, nothing else in between;
    produce to arrival in ms, the first second left out."""
    probe = Probe(client, {topic: "raw"}, partitions).start()
    count = max(1, int(rate * seconds))
    try:
        messages = [(str(i), str(i).encode(), str(i).encode()) for i in range(count)]
        sent = offer(producer, topic, messages, rate).sent
        deadline = time.monotonic() + 30
        while probe.seen("raw") < count and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        arrivals = probe.stop()
    warm = min(sent.values()) + 1.0
    return latencies({i: t for i, t in sent.items() if t >= warm}, arrivals.of("raw"))
