"""Latency (part 3): from producing an order to the matching user_order_stats event,
at a fixed offered rate, with one worker.

A consumer thread in this process reads both ``order_created`` and ``user_order_stats``
from the start and notes when each order id arrives (``order_id`` of the order,
``last_order_id`` of the stats event). The produce time is taken just before
``produce()``. The order's own arrival is the baseline: the broker and client round trip
that any consumer pays, measured in the same run. Orders of the first ``WARMUP`` seconds
are produced but left out of the figures (connections, fetch sessions, first commits).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.common import (
    Offsets,
    Row,
    cores,
    make_deployment,
    median,
    order_stream,
    prepare,
    run_id,
    spread,
)
from pipeline.dev.workers import Deployment, wait_for
from pipeline.serde.codec import Codecs
from pipeline.streaming.producer import producer_config

WARMUP = 2.0


@dataclass(frozen=True)
class Percentiles:
    p50: float
    p99: float
    max: float
    count: int

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), p99, ordered[-1], len(ordered))

    def text(self) -> str:
        return f"p50 {self.p50:,.0f} / p99 {self.p99:,.0f} / max {self.max:,.0f} ms"


class Arrivals(threading.Thread):
    """Wall-clock arrival time of each order id on the input and on user_order_stats."""

    def __init__(self, deployment: Deployment, codecs: Codecs) -> None:
        super().__init__(daemon=True)
        settings = deployment.settings
        names = deployment.names
        self.orders_topic = names.order_created
        self.stats_topic = names.user_order_stats
        self.orders_codec = codecs[self.orders_topic]
        self.stats_codec = codecs[self.stats_topic]
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"{deployment.name}-latency-reader",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        offsets = Offsets(settings)
        self.consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in (self.orders_topic, self.stats_topic)
                for partition in offsets.partitions(topic)
            ]
        )
        offsets.close()
        self.input: dict[str, float] = {}
        self.output: dict[str, float] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in self.consumer.consume(num_messages=1000, timeout=0.05):
                now = time.time()
                if message.error() is not None:
                    continue
                if message.topic() == self.stats_topic:
                    stats = self.stats_codec.decode(message.value() or b"")
                    self.output.setdefault(stats["last_order_id"], now)
                else:
                    order = self.orders_codec.decode(message.value() or b"")
                    self.input.setdefault(order["order_id"], now)
        self.consumer.close()


def offer(deployment: Deployment, codecs: Codecs, rate: float, seconds: float) -> dict[str, float]:
    """Produce ``rate`` orders/s for ``seconds``; order id → wall-clock produce time."""
    settings = deployment.settings
    topic = deployment.names.order_created
    codec = codecs[topic]
    total = max(1, int(rate * seconds))
    # Encoded up front, so the paced loop does nothing but produce.
    messages = [
        (record["order_id"], key.encode(), codec.encode(record))
        for key, record in order_stream(total, users=max(total // 2, 1), skus=2_000)
    ]
    producer = Producer(producer_config(settings))
    sent: dict[str, float] = {}
    started = time.monotonic()
    for index, (order_id, key, value) in enumerate(messages):
        ahead = started + index / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        sent[order_id] = time.time()
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    producer.flush()
    return sent


def measure_once(
    root: Path, label: str, rate: float, seconds: float
) -> tuple[Percentiles, Percentiles]:
    """One worker on a fresh deployment; (pipeline, transport) percentiles after warm-up."""
    deployment = make_deployment(f"bench-{run_id()}-{label}", root / label)
    codecs = prepare(deployment)
    worker = deployment.worker("w0").start()
    arrivals = Arrivals(deployment, codecs)
    try:
        worker.wait_healthy()
        arrivals.start()
        print(f"latency: offering {rate:,.0f} orders/s for {seconds:.0f} s ...", flush=True)
        sent = offer(deployment, codecs, rate, seconds)
        wait_for(
            "every user_order_stats event",
            lambda: len(arrivals.output) >= len(sent),
            timeout=120 + len(sent) / 50,
            interval=0.2,
        )
    finally:
        arrivals.stopping.set()
        worker.stop()
    arrivals.join(30)
    warm = min(sent.values()) + WARMUP
    measured = {o: t for o, t in sent.items() if t >= warm}
    pipeline = Percentiles.of([(arrivals.output[o] - t) * 1000 for o, t in measured.items()])
    transport = Percentiles.of(
        [(arrivals.input[o] - t) * 1000 for o, t in measured.items() if o in arrivals.input]
    )
    print(f"  pipeline {pipeline.text()}; transport {transport.text()}", flush=True)
    return pipeline, transport


def _text(runs: list[Percentiles]) -> str:
    return (
        f"p50 {spread([r.p50 for r in runs])} / p99 {spread([r.p99 for r in runs])} / "
        f"max {spread([r.max for r in runs])} ms"
    )


def run(root: Path, rate: float, seconds: float, repeats: int = 3) -> list[Row]:
    pipeline: list[Percentiles] = []
    transport: list[Percentiles] = []
    for repeat in range(repeats):
        ours, floor = measure_once(root, f"latency{rate:.0f}-r{repeat}", rate, seconds)
        pipeline.append(ours)
        transport.append(floor)
    ratio = median([p.p50 / max(t.p50, 0.001) for p, t in zip(pipeline, transport, strict=True)])
    offered = (
        f"{rate:,.0f} orders/s for {seconds:.0f} s per repeat, {pipeline[0].count:,} orders "
        f"after {WARMUP:.0f} s warm-up, 1 worker"
    )
    return [
        Row(
            "3 latency",
            f"order → user_order_stats at {rate:,.0f}/s",
            _text(pipeline),
            f"p50 {ratio:,.1f}x transport",
            f"{offered}, {cores()} cores",
        ),
        Row(
            "3 latency",
            f"order → order_created at {rate:,.0f}/s (transport)",
            _text(transport),
            "",
            "the broker round trip alone, same consumer, same runs",
        ),
    ]
