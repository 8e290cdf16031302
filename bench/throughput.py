"""Throughput of the whole topology (parts 1 and 2): the pipeline with one or more
workers, the bare limit, and the Quix Streams peer, all over the same pre-loaded input.

Every system reads the same ``order_created`` topic with a consumer group of its own
and writes its derived topics; the time is taken from the first to the last derived
record appearing (end offsets of ``user_order_stats`` and ``stock_levels`` polled every
0.05 s), so start-up and group joins are left out; the bare loop, which finishes in well
under a second, times itself (first record consumed to last output acknowledged).
Systems run one after the other, interleaved across repeats, so a noisy minute hits
each of them rather than one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import quix_env
from bench.common import (
    BENCH_DIR,
    Offsets,
    Preloaded,
    Row,
    Window,
    copy_topic,
    cores,
    make_deployment,
    median,
    preload_orders,
    prepare,
    run_id,
    spread,
    stop_process,
    wait_stable_group,
    watch_outputs,
)
from pipeline.dev.workers import Deployment, wait_for

BARE = "bare"
QUIX = "quix"


def pipeline_system(workers: int) -> str:
    return f"pipeline x{workers}"


@dataclass
class Input:
    """Pre-loaded orders on one deployment's order_created topic."""

    deployment: Deployment
    loaded: Preloaded

    def timeout(self) -> float:
        # Generous: a system slower than 100 orders/s is broken, not slow.
        return max(180.0, self.loaded.orders / 100)


def make_input(root: Path, orders: int, users: int, skus: int) -> Input:
    deployment = make_deployment(f"bench-{run_id()}", root / "input")
    codecs = prepare(deployment)
    return Input(deployment, preload_orders(deployment, codecs, orders, users, skus))


def run_pipeline(source: Input, workers: int, label: str) -> Window:
    """``workers`` workers of a deployment of their own; once their group has settled, the
    input is copied to its order_created topic; the window of their outputs.

    The workers start on an empty topic because a group that rebalances while working
    through a backlog measures the rebalance (and, at the time of writing, can stall a
    worker: see the bench report).
    """
    deployment = make_deployment(
        f"{source.deployment.name}-{label}", source.deployment.root / label
    )
    prepare(deployment)
    names = deployment.names
    expected = {
        names.user_order_stats: source.loaded.orders,
        names.stock_levels: source.loaded.lines,
    }
    offsets = Offsets(deployment.settings)
    start = offsets.ends(expected)
    started = [deployment.worker(f"w{index}").start() for index in range(workers)]
    try:
        wait_stable_group(started)
        copy_topic(deployment.settings, source.deployment.names.order_created, names.order_created)
        window = watch_outputs(
            offsets,
            expected,
            source.timeout(),
            alive=lambda: all(w.process is not None and w.process.poll() is None for w in started),
            start=start,
        )
        # Completeness: the group committed every input offset (commits every 2.8 s).
        group = deployment.settings.app_id
        topic = names.order_created
        wait_for(
            f"{group} to commit {topic}",
            lambda: offsets.committed(group, topic) >= source.loaded.orders,
            timeout=60,
            interval=0.5,
        )
        return window
    finally:
        for worker in started:
            worker.stop()
        offsets.close()


def _outputs_of(prefix_deployment: Deployment, source: Input) -> dict[str, int]:
    names = prefix_deployment.names
    return {
        names.user_order_stats: source.loaded.orders,
        names.stock_levels: source.loaded.lines,
    }


def run_bare(source: Input, label: str) -> Window:
    """The bare loop over the input; its window is the one it timed itself (see bench.bare),
    after checking that its outputs all arrived."""
    out = make_deployment(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(out)
    expected = _outputs_of(out, source)
    offsets = Offsets(out.settings)
    start = offsets.ends(expected)
    out.root.mkdir(parents=True, exist_ok=True)
    report = out.root / "bare.json"
    with (out.root / "bare.log").open("ab") as log, report.open("wb") as stdout:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bare",
                "--input",
                source.deployment.names.order_created,
                "--output-prefix",
                f"{out.name}.",
                "--group",
                out.name,
                "--count",
                str(source.loaded.orders),
            ],
            env=out.env,
            stdout=stdout,
            stderr=log,
        )
    try:
        watch_outputs(
            offsets,
            expected,
            source.timeout(),
            alive=lambda: process.poll() in (None, 0),
            start=start,
        )
        process.wait(60)
    finally:
        stop_process(process)
        offsets.close()
    seconds = float(json.loads(report.read_text())["seconds"])
    return Window(0.0, seconds)


def start_quix(input_topic: str, out: Deployment) -> subprocess.Popen[bytes]:
    """The Quix Streams peer reading ``input_topic`` (from its beginning) and writing the
    derived topics of ``out``, with a consumer group and state dir of its own."""
    python = quix_env.ensure()
    settings = out.settings
    out.root.mkdir(parents=True, exist_ok=True)
    with (out.root / "quix.log").open("ab") as log:
        return subprocess.Popen(
            [
                str(python),
                str(BENCH_DIR / "peers" / "quix_shop.py"),
                "--broker",
                settings.kafka_bootstrap_servers,
                "--registry",
                settings.schema_registry_url,
                "--input",
                input_topic,
                "--output-prefix",
                f"{out.name}.",
                "--group",
                out.name,
                "--state-dir",
                str(out.root / "state"),
                "--schemas-dir",
                str(BENCH_DIR.parent / "schemas"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def run_quix(source: Input, label: str) -> Window:
    out = make_deployment(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(out)  # the output topics and their subjects
    expected = _outputs_of(out, source)
    offsets = Offsets(out.settings)
    start = offsets.ends(expected)
    process = start_quix(source.deployment.names.order_created, out)
    try:
        return watch_outputs(
            offsets, expected, source.timeout(), alive=lambda: process.poll() is None, start=start
        )
    finally:
        stop_process(process)
        offsets.close()


@dataclass
class Results:
    source: Input
    rates: dict[str, list[float]] = field(default_factory=dict)

    def add(self, system: str, window: Window) -> None:
        rate = self.source.loaded.orders / window.seconds
        self.rates.setdefault(system, []).append(rate)
        print(f"  {system:<14} {rate:>10,.0f} orders/s ({window.seconds:.1f} s)", flush=True)


def measure(
    root: Path, orders: int, users: int, skus: int, repeats: int, systems: Sequence[str]
) -> Results:
    """Pre-load once, then run every system ``repeats`` times, interleaved."""
    print(f"pre-loading {orders:,} orders ...", flush=True)
    source = make_input(root, orders, users, skus)
    loaded = source.loaded
    print(
        f"  {loaded.orders:,} orders, {loaded.lines:,} lines in {loaded.seconds:.1f} s "
        f"({loaded.orders / loaded.seconds:,.0f}/s) on {source.deployment.names.order_created}",
        flush=True,
    )
    results = Results(source)
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}", flush=True)
        for system in systems:
            label = f"{system.replace(' ', '')}-r{repeat}"
            if system == BARE:
                window = run_bare(source, label)
            elif system == QUIX:
                window = run_quix(source, label)
            else:
                window = run_pipeline(source, int(system.rsplit("x", 1)[1]), label)
            results.add(system, window)
    return results


def rows(results: Results, part: str, baseline: str) -> list[Row]:
    loaded = results.source.loaded
    base = median(results.rates[baseline])
    out = []
    peer = median(results.rates[QUIX]) if QUIX in results.rates else None
    for system, rates in results.rates.items():
        ratios = [] if system == baseline else [f"{median(rates) / base:.2f}x {baseline}"]
        if peer is not None and system not in (baseline, QUIX):
            ratios.append(f"{median(rates) / peer:.2f}x {QUIX}")
        ratio = ", ".join(ratios)
        out.append(
            Row(
                part,
                f"{system}: orders/s",
                spread(rates),
                ratio,
                f"N={loaded.orders:,} orders ({loaded.lines:,} lines), {cores()} cores",
            )
        )
    return out


def run(
    root: Path, orders: int, users: int, skus: int, repeats: int, quix: bool = True
) -> list[Row]:
    systems = [BARE, pipeline_system(1)] + ([QUIX] if quix else [])
    results = measure(root, orders, users, skus, repeats, systems)
    return rows(results, "1 throughput", BARE)
