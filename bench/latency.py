"""Latency (part 3): from producing an order to its user_order_stats event, to the last of its
stock_levels events and (with issue 28's join) to its confirmation on notifications, at a
fixed offered rate, with one worker (or the Quix peer).

Each run has a deployment of its own, its users registered (``USERS`` registrations on
user_registered) before the system starts. Once the system under test runs, the probe
(bench.probe: a consumer process of its own, one message per poll) reads ``order_created``,
``user_order_stats``, ``stock_levels`` and, when the pipeline under test confirms orders,
``notifications`` from their start. Warm-up orders go in one at a time until five in a row
came out on every derived topic within 250 ms (the system is past its start-up and the probe
sees it); then the paced producer offers ``rate`` orders/s for ``seconds``. The produce time
is taken just before ``produce()`` (linger.ms 0, acks=all); an order's stock time is the
arrival of the last of its lines' stock levels (found by ``updated_at``, the order's unique
``created_at``). Orders of the first ``WARMUP`` seconds are left out (connections, fetch
sessions, first commits, a fresh worker's first stall). The order's own arrival on
``order_created`` is the transport baseline of the same run; :func:`raw_round_trip` is the
probe's floor on an idle topic. An order that has not come out ``grace`` seconds after the
last was offered counts as infinitely late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bench import throughput
from bench.common import (
    EXACTLY_ONCE,
    Offsets,
    Row,
    cores,
    guarantee_of,
    make_deployment,
    median,
    order_stream,
    pipeline_work,
    preload_registrations,
    prepare,
    run_id,
    spread,
    stop_process,
    wait_stable_group,
)
from bench.probe import Percentiles, Probe, latencies, offer, round_trip
from pipeline.dev.workers import Deployment
from pipeline.kafka.naming import TopicSpec
from pipeline.kafka.topics import ensure_topics
from pipeline.settings import Settings
from pipeline.streaming.producer import producer_config

PIPELINE = "pipeline x1"
QUIX = throughput.QUIX
# Seconds of the paced stream left out: a fresh worker can stall for a second or two once
# the load starts, after its warm-up orders went through fast.
WARMUP = 5.0
# Orders a run draws its users and SKUs from, as in the throughput part.
USERS = 20_000
SKUS = 2_000
# Warm-up: at most this many orders, each waited for up to WARM_WAIT seconds (or twice the
# limit), until WARM_STREAK in a row came out within the limit: WARM_MS, and under
# exactly_once two commit intervals more (see warm_limit).
WARMUP_ORDERS = 300
WARM_WAIT = 0.5
WARM_STREAK = 5
WARM_MS = 250.0
Order = tuple[str, bytes, bytes, dict[str, Any]]  # order id, key, value, record


def offer_config(settings: Settings) -> dict[str, Any]:
    """The paced producer's settings: the worker's (murmur2, idempotent, acks=all), with
    ``linger.ms`` 0 so that the producer's batching adds nothing to the figures."""
    return {**producer_config(settings), "linger.ms": 0}


@dataclass(frozen=True)
class Live:
    """One run at one offered rate: latencies of the orders after warm-up."""

    transport: Percentiles
    stats: Percentiles
    levels: Percentiles
    offered: float  # orders/s the producer achieved
    # Order to its confirmation, when the system confirms orders.
    confirmations: Percentiles | None = None

    def outputs(self) -> list[Percentiles]:
        return [self.stats, self.levels] + ([self.confirmations] if self.confirmations else [])

    def p99(self) -> float:
        """The latest output's p99: an order is done once all of its outputs are out."""
        return max(output.p99 for output in self.outputs())


@contextmanager
def running(system: str, deployment: Deployment) -> Iterator[Callable[[], bool]]:
    """``system`` consuming ``deployment``'s order_created and writing its derived topics,
    from the input's start; yields whether it is still running."""
    if system == QUIX:
        process = throughput.start_quix(deployment, deployment)
        try:
            yield lambda: process.poll() is None
        finally:
            stop_process(process)
        return
    worker = deployment.worker("w0").start()
    try:
        wait_stable_group([worker])
        yield worker.running
    finally:
        worker.stop()


def warm_limit(settings: Settings) -> float:
    """Seconds within which a warm system's order is out on both derived topics: ``WARM_MS``,
    and under exactly_once two commit intervals more (a read_committed reader sees a stock
    level after two commits: the order's, then its re-keyed line's)."""
    transactions = settings.processing_guarantee == EXACTLY_ONCE
    return (WARM_MS + (2 * settings.commit_interval_ms if transactions else 0)) / 1000


def warm_up(
    producer: Producer,
    topic: str,
    orders: list[Order],
    probe: Probe,
    within: float,
    confirms: bool,
) -> int:
    """Produce ``orders`` one at a time, each once the previous came out or ``WARM_WAIT``
    (at least twice ``within``) passed, until ``WARM_STREAK`` in a row came out on every
    derived topic (notifications too when the system ``confirms``) within ``within``
    seconds: the system is past its start-up (a worker's first seconds after its group
    settled can still stall). How many it took."""
    wait = max(WARM_WAIT, 2 * within)
    streak = 0
    for index, (_, key, value, record) in enumerate(orders, start=1):
        stats, levels, confirmed = probe.seen("stats"), probe.seen("level"), probe.seen("confirm")
        lines = len(record["items"])
        started = time.monotonic()
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
        while time.monotonic() - started < wait:
            if (
                probe.seen("stats") > stats
                and probe.seen("level") >= levels + lines
                and (not confirms or probe.seen("confirm") > confirmed)
            ):
                break
            time.sleep(0.002)
        fast = time.monotonic() - started < within
        streak = streak + 1 if fast else 0
        if streak >= WARM_STREAK:
            producer.flush(10)
            return index
    raise TimeoutError(f"{len(orders)} warm-up orders and still not {WARM_STREAK} fast in a row")


def measure_once(
    root: Path, label: str, system: str, rate: float, seconds: float, grace: float = 15.0
) -> Live:
    """``system`` on a fresh deployment, its users registered, offered ``rate`` orders/s for
    ``seconds``."""
    deployment = make_deployment(f"bench-{run_id()}-{label}", root / label, guarantee_of(system))
    codecs = prepare(deployment)
    preload_registrations(deployment, codecs, USERS)
    # The Quix peer confirms orders when the pipeline under test does (bench.throughput).
    confirms = pipeline_work().confirms
    names = deployment.names
    topic = names.order_created
    codec = codecs[topic]
    total = max(1, int(rate * seconds))
    records: list[Order] = [
        (record["order_id"], key.encode(), codec.encode(record), record)
        for key, record in order_stream(WARMUP_ORDERS + total, users=USERS, skus=SKUS)
    ]
    warmups, timed = records[:WARMUP_ORDERS], records[WARMUP_ORDERS:]
    config = offer_config(deployment.settings)
    offsets = Offsets(deployment.settings)
    kinds = {topic: "order", names.user_order_stats: "stats", names.stock_levels: "level"}
    if confirms:
        kinds[names.notifications] = "confirm"
    probe = Probe(deployment.settings.kafka_client_config(), kinds, offsets.partitions)
    lines = sum(len(record["items"]) for *_, record in timed)
    with running(system, deployment) as alive:
        probe.start()
        try:
            within = warm_limit(deployment.settings)
            warmed = warm_up(Producer(config), topic, warmups, probe, within, confirms)
            stats_before, levels_before = probe.seen("stats"), probe.seen("level")
            confirmed_before = probe.seen("confirm")
            print(
                f"latency: {system}, {rate:,.0f} orders/s for {seconds:.0f} s "
                f"(ready after {warmed} warm-up orders) ...",
                flush=True,
            )
            offered = offer(config, topic, [(i, k, v) for i, k, v, _ in timed], rate)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and alive():
                if (
                    probe.seen("stats") >= stats_before + total
                    and probe.seen("level") >= levels_before + lines
                    and (not confirms or probe.seen("confirm") >= confirmed_before + total)
                ):
                    break
                time.sleep(0.1)
        finally:
            arrivals = probe.stop()
            offsets.close()
    warm = min(offered.sent.values()) + WARMUP
    measured = {o: t for o, t in offered.sent.items() if t >= warm}
    level_values = []
    for order_id, *_, record in timed:
        if order_id in measured:
            times = arrivals.level_times(record["created_at"])
            if len(times) >= len(record["items"]):
                level_values.append((max(times) - measured[order_id]) * 1000)
    live = Live(
        transport=latencies(measured, arrivals.of("order")),
        stats=latencies(measured, arrivals.of("stats")),
        levels=Percentiles.of(level_values, missing=len(measured) - len(level_values)),
        offered=total / offered.seconds,
        confirmations=latencies(measured, arrivals.of("confirm")) if confirms else None,
    )
    confirmations = f"confirmations {live.confirmations.text()}; " if live.confirmations else ""
    print(
        f"  user_order_stats {live.stats.text()}; stock_levels {live.levels.text()}; "
        f"{confirmations}transport {live.transport.text()} (offered {live.offered:,.0f}/s)",
        flush=True,
    )
    return live


def raw_round_trip(root: Path, part: str, rate: float = 200.0, seconds: float = 10.0) -> Row:
    """The probe alone on an empty topic of its own, no worker running (see
    bench.probe.round_trip), with the paced producer's settings."""
    deployment = make_deployment(f"bench-{run_id()}-probe", root / "probe")
    settings = deployment.settings
    topic = f"{deployment.name}.probe_round_trip"
    ensure_topics(settings, [TopicSpec(topic)])
    offsets = Offsets(settings)
    try:
        result = round_trip(
            settings.kafka_client_config(),
            offer_config(settings),
            topic,
            offsets.partitions,
            rate,
            seconds,
        )
    finally:
        offsets.close()
    print(f"probe: raw round trip {result.text()}", flush=True)
    return Row(
        part,
        "probe floor: raw produce → consume round trip",
        result.text(),
        "",
        f"{rate:,.0f} short messages/s for {seconds:.0f} s to an empty topic, no worker "
        "running; linger.ms 0, acks=all; the probe process polls one message at a time",
    )


def _text(runs: list[Percentiles]) -> str:
    return f"p50 {spread([r.p50 for r in runs])} / p99 {spread([r.p99 for r in runs])} ms"


def run(root: Path, rate: float, seconds: float, repeats: int = 3) -> list[Row]:
    """Part 3 at one rate: one worker, ``repeats`` runs."""
    runs = [
        measure_once(root, f"latency{rate:.0f}-r{repeat}", PIPELINE, rate, seconds)
        for repeat in range(repeats)
    ]
    offered = (
        f"{rate:,.0f} orders/s for {seconds:.0f} s per repeat, {runs[0].stats.count:,} orders "
        f"after {WARMUP:.0f} s warm-up, 1 worker, {cores()} cores"
    )
    rows = []
    outputs = [
        ("user_order_stats", [live.stats for live in runs]),
        ("last stock_levels", [live.levels for live in runs]),
    ]
    confirmations = [live.confirmations for live in runs if live.confirmations is not None]
    if confirmations:
        outputs.append(("its confirmation (notifications)", confirmations))
    for what, figures in outputs:
        ratio = median(
            [f.p50 / max(r.transport.p50, 0.001) for f, r in zip(figures, runs, strict=True)]
        )
        missing = sum(f.missing for f in figures)
        rows.append(
            Row(
                "3 latency",
                f"order → {what} at {rate:,.0f}/s",
                _text(figures) + (f" ({missing:,} not arrived)" if missing else ""),
                f"p50 {ratio:,.1f}x transport",
                offered,
            )
        )
    rows.append(
        Row(
            "3 latency",
            f"order → order_created at {rate:,.0f}/s (transport)",
            _text([live.transport for live in runs]),
            "",
            "the broker round trip of the input itself, same probe, same runs",
        )
    )
    return rows
