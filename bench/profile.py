"""Where a worker's time goes: py-spy samples one worker over a pre-loaded input.

py-spy attaches to the worker's pid once it is healthy, samples at 100 Hz without
pausing it (``--nonblocking``), and is stopped (SIGINT, by its pid) when the outputs are
complete. Idle samples (the event loop waiting) are dropped by py-spy. The summary gives
the share of samples by package of the innermost frame (self time), and the functions
with the most self and inclusive samples. The raw stacks stay in the run directory
(collapsed format: flamegraph.pl or speedscope open them).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from bench.common import (
    Offsets,
    Row,
    cpu_seconds,
    make_deployment,
    pipeline_outputs,
    preload_orders,
    prepare,
    run_id,
    watch_outputs,
)

# Orders profiled by default: about 20 s of one worker's work here (2026-12-03), 2,000 samples.
ORDERS = 100_000
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
PACKAGES = (
    "pipeline",
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "fastavro",
    "rocksdict",
    "prometheus_client",
    "aiohttp",
    "asyncio",
    "venusian",
)

INCLUSIVE_PACKAGES = ("pipeline", "faust", "aiokafka", "fastavro", "rocksdict")
# Innermost frames that are waits py-spy does not recognise as idle: the event loop in
# epoll, and (in workers before the loop served delivery reports) the producer's
# delivery-report thread blocked in librdkafka with the GIL released.
WAITS = ("EpollSelector.select", "BatchProducer._poll")


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    return found


def package_of(path: str) -> str:
    parts = Path(path).parts
    for name in PACKAGES:
        if name in parts or path.startswith(name + "/") or path == name + ".py":
            return name
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    return Path(path).stem if "lib" not in parts else "stdlib"


def parse(lines: Iterable[str]) -> list[tuple[list[tuple[str, str]], int]]:
    """Collapsed stacks → [([(function, file), ... innermost last], samples)]."""
    stacks = []
    for line in lines:
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack_text, _, count = line.rpartition(" ")
        frames = []
        for frame in stack_text.split(";"):
            match = FRAME.match(frame)
            if match:
                frames.append((match["func"], match["file"]))
        if frames:
            stacks.append((frames, int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[tuple[str, str]], int]], top: int
) -> tuple[str, dict[str, float]]:
    waiting = sum(count for frames, count in stacks if frames[-1][0] in WAITS)
    stacks = [(frames, count) for frames, count in stacks if frames[-1][0] not in WAITS]
    total = sum(count for _, count in stacks) or 1
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        func, path = frames[-1]
        by_package[package_of(path)] += count
        self_time[f"{func} ({package_of(path)}: {Path(path).name})"] += count
        for name in {f"{f} ({package_of(p)}: {Path(p).name})" for f, p in frames}:
            inclusive[name] += count
    share = {name: count / total for name, count in by_package.items()}
    out = [
        f"{total:,} samples while busy (100 Hz; idle dropped, and {waiting:,} in "
        f"{' / '.join(WAITS)})",
        "",
        "self time by package:",
    ]
    out += [f"  {count / total:6.1%}  {name}" for name, count in by_package.most_common(12)]
    out += ["", f"top {top} functions by self time:"]
    out += [f"  {count / total:6.1%}  {name}" for name, count in self_time.most_common(top)]
    # Inclusive time, without the frames every sample shares (the CLI and the event loop).
    ours = [
        (name, count)
        for name, count in inclusive.most_common()
        if not name.startswith(("Command.", "<module>"))
        and name.split("(", 1)[1].split(":")[0] in INCLUSIVE_PACKAGES
    ]
    out += ["", f"top {top} functions by inclusive time ({', '.join(INCLUSIVE_PACKAGES)}):"]
    out += [f"  {count / total:6.1%}  {name}" for name, count in ours[:top]]
    return "\n".join(out), share


def run(root: Path, orders: int, top: int) -> tuple[list[Row], str]:
    deployment = make_deployment(f"bench-{run_id()}-prof", root / "profile")
    codecs = prepare(deployment)
    loaded = preload_orders(deployment, codecs, orders, users=max(orders, 2), skus=2_000)
    names = deployment.names
    expected = pipeline_outputs(names, loaded)
    offsets = Offsets(deployment.settings)
    start = offsets.ends(expected)
    output = deployment.root / "worker.pyspy.txt"
    worker = deployment.worker("w0").start()
    spy: subprocess.Popen[bytes] | None = None
    busy = float("nan")
    try:
        worker.wait_healthy()
        spy = subprocess.Popen(
            [
                py_spy(),
                "record",
                "--pid",
                str(worker.pid),
                "--rate",
                "100",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(output),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        print(f"profile: py-spy on worker pid {worker.pid}, {orders:,} orders ...", flush=True)
        cpu_start, wall_start = cpu_seconds(worker.pid), time.monotonic()
        watch_outputs(offsets, expected, timeout=max(300.0, orders / 50), start=start)
        busy = (cpu_seconds(worker.pid) - cpu_start) / (time.monotonic() - wall_start)
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        worker.stop()
        offsets.close()
    text, share = summarise(parse(output.read_text().splitlines()), top)
    text = (
        f"{loaded.orders:,} orders ({loaded.lines:,} lines), one worker; stacks in {output}\n"
        f"worker CPU while processing: {busy:.0%} of one core (py-spy attached)\n{text}"
    )
    biggest = sorted(share.items(), key=lambda item: -item[1])[:5]
    summary = ", ".join(f"{name} {value:.0%}" for name, value in biggest)
    row = Row(
        "profile",
        "self time by package (py-spy)",
        summary,
        "",
        f"worker CPU {busy:.0%} of one core while processing",
    )
    return [row], text
