"""Throughput of the whole topology (parts 1 and 2): the pipeline with one or more
workers, the two bare limits, and the Quix Streams peer, over pre-loaded input.

Every system reads a pre-loaded ``order_created`` topic with a consumer group of its own
and writes its derived topics; the pipeline and the Quix peer also read the registration of
each user, loaded before the orders, and write its welcome and (with issue 28's join) a
confirmation of each order to ``notifications``. Each system gets an input sized for about
20 s or more of its own work here (``DEFAULT_ORDERS``; ``--orders`` gives every system the
same N): the inputs are prefixes of one deterministic order stream, so the orders differ
only in how many there are. The time is taken from the first to the last derived record
appearing (end offsets of ``user_order_stats``, ``stock_levels`` and ``notifications``
polled every 0.05 s), so start-up and group joins are left out; the bare loops (orders
only, no notifications) time themselves (first record consumed to last output
acknowledged) after the same check that every output arrived.
Systems run one after the other, interleaved across repeats, so a noisy minute hits
each of them rather than one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import quix_env
from bench.common import (
    BENCH_DIR,
    EXACTLY_ONCE,
    Offsets,
    Preloaded,
    Row,
    Window,
    copy_topic,
    cores,
    cpu_seconds,
    expected_outputs,
    guarantee_of,
    make_deployment,
    median,
    peak_rss_bytes,
    pipeline_outputs,
    pipeline_work,
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
BARE_TOPOLOGY = "bare topology"
QUIX = "quix"
BARE_MODULES = {BARE: "bench.bare", BARE_TOPOLOGY: "bench.bare_topology"}


def pipeline_system(workers: int, guarantee: str = "at_least_once") -> str:
    name = f"pipeline x{workers}"
    return f"{name} {EXACTLY_ONCE}" if guarantee == EXACTLY_ONCE else name


# Orders pre-loaded for each system by default: 20 s or more of its work at the upper end
# of what it did here (2 shared cores, 2026-12-03): bare 40k orders/s, bare topology 25k/s,
# one worker 4,700/s, two workers up to 1.8x one, Quix 4,500/s.
DEFAULT_ORDERS = {
    BARE: 1_000_000,
    BARE_TOPOLOGY: 500_000,
    pipeline_system(1): 100_000,
    pipeline_system(1, EXACTLY_ONCE): 100_000,
    pipeline_system(2): 170_000,
    QUIX: 100_000,
}


def sizes(systems: Sequence[str], orders: int | None) -> dict[str, int]:
    """Orders pre-loaded for each system: ``orders`` for all, or each one's default."""
    return {s: orders if orders is not None else DEFAULT_ORDERS[s] for s in systems}


@dataclass
class Input:
    """Pre-loaded registrations and orders on one deployment's user_registered and
    order_created topics."""

    deployment: Deployment
    loaded: Preloaded

    def timeout(self) -> float:
        # Generous: a system slower than 100 orders/s is broken, not slow.
        return max(180.0, self.loaded.orders / 100)


def make_input(root: Path, orders: int, users: int, skus: int) -> Input:
    deployment = make_deployment(f"bench-{run_id()}", root / f"input-{orders}")
    codecs = prepare(deployment)
    return Input(deployment, preload_orders(deployment, codecs, orders, users, skus))


def run_deployment(source: Input, label: str, guarantee: str) -> Deployment:
    """A deployment of its own for one run of the pipeline over ``source``."""
    return make_deployment(
        f"{source.deployment.name}-{label}", source.deployment.root / label, guarantee
    )


def run_pipeline(source: Input, deployment: Deployment, workers: int, guarantee: str) -> Window:
    """``workers`` workers of ``deployment`` (``run_deployment``); once their group has
    settled, the input is copied to its user_registered and order_created topics (the
    registrations first); the window of their outputs (``pipeline_outputs``: what the
    pipeline they run derives), the dead letters of the input's bad messages among them.

    The workers start on an empty topic because a group that rebalances while working
    through a backlog measures the rebalance (and, at the time of writing, can stall a
    worker: see the bench report).

    Under exactly_once the outputs' end offsets also count transaction markers (one per
    partition and commit), so they reach their target early: the window ends when the group
    has committed every input offset and every re-keyed order line instead, which is when
    the last outputs became visible to read_committed readers (in the same transaction).
    """
    prepare(deployment)
    names = deployment.names
    expected = pipeline_outputs(names, source.loaded)
    messages = source.loaded.orders + source.loaded.bad
    offsets = Offsets(deployment.settings)
    start = offsets.ends(expected)
    started = [deployment.worker(f"w{index}").start() for index in range(workers)]
    try:
        wait_stable_group(started)
        # CPU seconds per order: less moved by other load on a shared machine than orders/s.
        cpu_before = [cpu_seconds(worker.pid) for worker in started]
        inputs = source.deployment.names
        copy_topic(deployment.settings, inputs.user_registered, names.user_registered)
        copy_topic(deployment.settings, inputs.order_created, names.order_created)
        window = watch_outputs(
            offsets,
            expected,
            source.timeout(),
            alive=lambda: all(w.process is not None and w.process.poll() is None for w in started),
            start=start,
        )
        for worker, before in zip(started, cpu_before, strict=True):
            used = cpu_seconds(worker.pid) - before
            print(
                f"  {deployment.name} {worker.label}: CPU {used:.1f} s while processing, "
                f"{used / source.loaded.orders * 1e6:,.0f} us/order",
                flush=True,
            )
        group = deployment.settings.app_id
        topic = names.order_created
        if guarantee == EXACTLY_ONCE:
            lines = names.order_lines_by_sku
            wait_for(
                f"{group} to commit {topic} and {lines}",
                lambda: (
                    offsets.committed(group, topic) >= messages
                    and offsets.committed(group, lines) >= source.loaded.lines
                ),
                timeout=source.timeout(),
                interval=0.02,
            )
            return Window(window.first, time.monotonic())
        # Completeness: the group committed every input offset (commits every 2.8 s).
        wait_for(
            f"{group} to commit {topic}",
            lambda: offsets.committed(group, topic) >= messages,
            timeout=60,
            interval=0.5,
        )
        return window
    finally:
        for worker in started:
            if worker.process is not None and worker.process.poll() is None:
                peak = peak_rss_bytes(worker.pid) / 1024**2
                print(f"  {deployment.name} {worker.label}: peak RSS {peak:,.0f} MiB", flush=True)
            worker.stop()
        offsets.close()


def _bare_outputs(out: Deployment, source: Input) -> dict[str, int]:
    """What a bare loop writes: it reads the orders alone (no registrations, no
    notifications)."""
    expected = expected_outputs(out.names, source.loaded, confirms=False)
    del expected[out.names.notifications]
    return expected


def run_bare(source: Input, label: str, system: str) -> Window:
    """A bare loop (``BARE_MODULES``) over the input; its window is the one it timed itself
    (see bench.bare and bench.bare_topology), after checking that its outputs all arrived."""
    out = make_deployment(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(out)
    expected = _bare_outputs(out, source)
    offsets = Offsets(out.settings)
    start = offsets.ends(expected)
    out.root.mkdir(parents=True, exist_ok=True)
    report = out.root / "bare.json"
    with (out.root / "bare.log").open("ab") as log, report.open("wb") as stdout:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                BARE_MODULES[system],
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


def start_quix(inputs: Deployment, out: Deployment) -> subprocess.Popen[bytes]:
    """The Quix Streams peer reading the user_registered and order_created topics of
    ``inputs`` (from their beginning) and writing the derived topics of ``out``, with a
    consumer group and state dir of its own; it confirms orders when the pipeline under test
    does (``pipeline_work``), so that both do the same work."""
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
                "--registrations",
                inputs.names.user_registered,
                "--input",
                inputs.names.order_created,
                "--output-prefix",
                f"{out.name}.",
                "--group",
                out.name,
                "--state-dir",
                str(out.root / "state"),
                "--schemas-dir",
                str(BENCH_DIR.parent / "schemas"),
                *([] if pipeline_work().confirms else ["--no-confirmations"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def run_quix(source: Input, label: str) -> Window:
    out = make_deployment(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(out)  # the output topics and their subjects
    expected = expected_outputs(out.names, source.loaded, pipeline_work().confirms)
    offsets = Offsets(out.settings)
    start = offsets.ends(expected)
    process = start_quix(source.deployment, out)
    try:
        return watch_outputs(
            offsets, expected, source.timeout(), alive=lambda: process.poll() is None, start=start
        )
    finally:
        stop_process(process)
        offsets.close()


@dataclass
class Results:
    inputs: dict[str, Input]  # system → its input
    rates: dict[str, list[float]] = field(default_factory=dict)

    def add(self, system: str, window: Window) -> None:
        rate = self.inputs[system].loaded.orders / window.seconds
        self.rates.setdefault(system, []).append(rate)
        print(f"  {system:<14} {rate:>10,.0f} orders/s ({window.seconds:.1f} s)", flush=True)

    def notes(self, system: str) -> str:
        loaded = self.inputs[system].loaded
        if system in BARE_MODULES:
            work = "no notifications"
        else:
            confirms = pipeline_work().confirms
            work = "a welcome per user" + (" and a confirmation per order" if confirms else "")
        return (
            f"N={loaded.orders:,} orders ({loaded.lines:,} lines) of {loaded.users:,} "
            f"registered users, {work}, {cores()} cores"
        )


def measure(
    root: Path,
    orders: Mapping[str, int],
    users: int,
    skus: int,
    repeats: int,
    systems: Sequence[str],
) -> Results:
    """Pre-load one input per distinct size in ``orders`` (system → N), then run every
    system ``repeats`` times, interleaved."""
    by_size: dict[int, Input] = {}
    for count in sorted({orders[system] for system in systems}):
        print(f"pre-loading {users:,} registrations and {count:,} orders ...", flush=True)
        source = by_size[count] = make_input(root, count, users, skus)
        loaded = source.loaded
        print(
            f"  {loaded.orders:,} orders, {loaded.lines:,} lines in {loaded.seconds:.1f} s "
            f"({loaded.orders / loaded.seconds:,.0f}/s) on "
            f"{source.deployment.names.order_created}",
            flush=True,
        )
    results = Results({system: by_size[orders[system]] for system in systems})
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}", flush=True)
        for system in systems:
            source = results.inputs[system]
            label = f"{system.replace(' ', '')}-r{repeat}"
            if system in BARE_MODULES:
                window = run_bare(source, label, system)
            elif system == QUIX:
                window = run_quix(source, label)
            else:
                workers = int(system.split()[1].removeprefix("x"))
                guarantee = guarantee_of(system)
                deployment = run_deployment(source, label, guarantee)
                window = run_pipeline(source, deployment, workers, guarantee)
            results.add(system, window)
    return results


def _ratio(rates: dict[str, list[float]], system: str, base: str) -> str:
    return f"{median(rates[system]) / median(rates[base]):.2f}x {base}"


def rows(results: Results, part: str, baseline: str) -> list[Row]:
    """One row per system, with its ratios to ``baseline``, to the bare topology and to the
    Quix peer (those measured in this run)."""
    rates = results.rates
    out = []
    for system in rates:
        bases = [baseline, BARE_TOPOLOGY, QUIX] if system not in BARE_MODULES else [baseline]
        ratio = ", ".join(
            _ratio(rates, system, base)
            for base in dict.fromkeys(bases)
            if base in rates and base != system
        )
        out.append(
            Row(part, f"{system}: orders/s", spread(rates[system]), ratio, results.notes(system))
        )
    return out


def run(
    root: Path,
    orders: int | None,
    users: int,
    skus: int,
    repeats: int,
    quix: bool = True,
    guarantees: Sequence[str] = ("at_least_once",),
    bare: bool = True,
) -> list[Row]:
    """The bare loops (unless not ``bare``), one worker under each of ``guarantees``, and
    the Quix peer."""
    pipelines = [pipeline_system(1, guarantee) for guarantee in guarantees]
    systems = ([BARE, BARE_TOPOLOGY] if bare else []) + pipelines + ([QUIX] if quix else [])
    results = measure(root, sizes(systems, orders), users, skus, repeats, systems)
    return rows(results, "1 throughput", BARE if bare else pipelines[0])
