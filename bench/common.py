"""What every part of the benchmark shares: deployments on the stack, worker processes,
pre-loaded input (a registration per user, then the orders), what the workers derive from
it, offset watching, and result rows.

Each benchmark run uses deployments of its own (app id and topic prefix), so runs never
share consumer groups, tables or derived topics with each other or with the tests.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaException,
    Producer,
    TopicPartition,
)

from pipeline.dev.loadgen import order, registration, user_id
from pipeline.dev.workers import Deployment, WorkerProcess
from pipeline.kafka.topics import ensure_topics
from pipeline.serde.codec import Codecs
from pipeline.services import shop
from pipeline.settings import Settings, read_env_file, stack_env_file
from pipeline.streaming.producer import producer_config
from pipeline.topics import TopicNames

BENCH_DIR = Path(__file__).resolve().parent


def cores() -> int:
    return len(os.sched_getaffinity(0))


def run_id() -> str:
    """A short tag unique to this run, for app ids, prefixes and consumer groups."""
    return f"{time.strftime('%H%M%S')}{random.randrange(1000):03d}"


WORKTREE = "worktree"


def use_pipeline_commit(commit: str) -> str:
    """Make the workers this process starts run ``pipeline/`` (and ``schemas/``) as committed
    at ``commit``, exported with ``git archive`` under bench/runs/: the working tree may be
    in the middle of an edit. Returns the full commit id (or "worktree" to run the working
    tree as it is)."""
    if commit == WORKTREE:
        os.environ.pop("PYTHONPATH", None)
        os.environ["BENCH_PIPELINE_COMMIT"] = WORKTREE
        return WORKTREE
    repo = BENCH_DIR.parent
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{commit}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = BENCH_DIR / "runs" / f"src-{sha[:12]}"
    if not target.exists():
        staging = target.with_name(target.name + ".partial")
        staging.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", sha, "pipeline", "schemas"],
            cwd=repo,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True)
        staging.rename(target)
    # Workers start outside the checkout (cwd is their run dir), so this path comes before
    # the editable install's.
    os.environ["PYTHONPATH"] = str(target)
    os.environ["BENCH_PIPELINE_COMMIT"] = sha
    return sha


def base_env() -> dict[str, str]:
    """The process environment over the stack's env file (what Settings.from_env reads)."""
    return {**read_env_file(stack_env_file()), **os.environ}


# The agent of the shop pipeline that confirms orders (issue 28's join), when it reads them.
CONFIRMING_AGENT = "notifications"
_READERS = """
import json
from pipeline.services import shop
from pipeline.settings import Settings
from pipeline.topics import TopicNames
settings = Settings.from_env()
orders = TopicNames.from_settings(settings).order_created
print(json.dumps(sorted(agent.name for agent in shop(settings).agents if orders in agent.rules)))
"""


@dataclass(frozen=True)
class Work:
    """What the shop pipeline the workers run does with the bench's input, asked of that
    pipeline itself (the commit ``use_pipeline_commit`` chose: an older one may predate a
    join): ``order_readers``, its agents that read order_created, each of which
    dead-letters a bad order once; a confirmation per order when the confirming agent is
    among them; a welcome per registration in any case."""

    order_readers: tuple[str, ...]

    @property
    def confirms(self) -> bool:
        return CONFIRMING_AGENT in self.order_readers


@functools.cache
def pipeline_work() -> Work:
    """The workers' ``Work``, from their pipeline in a process of its own (run outside the
    checkout, so that PYTHONPATH, not the working tree, supplies ``pipeline``)."""
    readers = subprocess.run(
        [sys.executable, "-c", _READERS],
        env=base_env(),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return Work(tuple(json.loads(readers)))


EXACTLY_ONCE = "exactly_once"


def guarantee_of(system: str) -> str:
    """A pipeline system's processing guarantee: "pipeline x1 exactly_once" runs under
    exactly_once, "pipeline x1" under at_least_once."""
    return EXACTLY_ONCE if system.endswith(EXACTLY_ONCE) else "at_least_once"


def make_deployment(name: str, root: Path, guarantee: str = "at_least_once") -> Deployment:
    """A deployment of its own (app id and topic prefix) on the stack the settings name."""
    return Deployment(
        name=name,
        root=root,
        base_env=base_env(),
        extra_env={"PIPELINE_PROCESSING_GUARANTEE": guarantee},
    )


def prepare(deployment: Deployment) -> Codecs:
    """Create the topics and register the schemas, outside any timed window."""
    settings = deployment.settings
    ensure_topics(settings, shop(settings).specs())
    codecs = Codecs.from_settings(settings)
    codecs.prepare()
    return codecs


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the peak resident set size of a process so far."""
    return _status_bytes(pid, "VmHWM")


def rss_bytes(pid: int) -> int:
    """VmRSS: the resident set size of a process now."""
    return _status_bytes(pid, "VmRSS")


def wait_stable_group(
    workers: Sequence[WorkerProcess], timeout: float = 300.0, steady: float = 3.0
) -> None:
    """Until every worker is healthy with partitions assigned and no assignment changed
    for ``steady`` seconds: the group has settled, no rebalance is coming."""
    last: list[int] | None = None
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        bodies = [worker.health() for worker in workers]
        counts = [int(body.get("assigned_partitions", 0)) if body else -1 for body in bodies]
        if counts != last:
            last, since = counts, time.monotonic()
        elif min(counts) > 0 and time.monotonic() - since >= steady:
            return
        time.sleep(0.2)
    raise TimeoutError(f"the group did not settle within {timeout:.0f} s (assigned: {last})")


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 60.0) -> None:
    """Stop one process we started, by its pid: SIGTERM, then SIGKILL after ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


class Offsets:
    """Watermarks and committed offsets, summed over a topic's partitions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = Consumer(
            {
                **settings.kafka_client_config(),
                "group.id": f"bench-offsets-{os.getpid()}",
                "enable.auto.commit": False,
            }
        )
        self._partitions: dict[str, list[int]] = {}

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            metadata = self.consumer.list_topics(topic, timeout=30).topics[topic]
            self._partitions[topic] = sorted(metadata.partitions)
        return self._partitions[topic]

    def end(self, topic: str) -> int:
        return sum(self._high(topic, p) for p in self.partitions(topic))

    def _high(self, topic: str, partition: int) -> int:
        # A topic created a moment ago may not have a leader yet: retry for a while.
        for attempt in range(50):
            try:
                low_high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )
                return int(low_high[1])
            except KafkaException:
                if attempt == 49:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def ends(self, topics: Iterable[str]) -> dict[str, int]:
        return {topic: self.end(topic) for topic in topics}

    def committed(self, group: str, topic: str) -> int:
        """Sum of ``group``'s committed offsets on ``topic`` (0 for uncommitted partitions)."""
        reader = Consumer(
            {
                **self.settings.kafka_client_config(),
                "group.id": group,
                "enable.auto.commit": False,
            }
        )
        try:
            offsets = reader.committed(
                [TopicPartition(topic, p) for p in self.partitions(topic)], timeout=30
            )
            return sum(max(tp.offset, 0) for tp in offsets)
        finally:
            reader.close()

    def close(self) -> None:
        self.consumer.close()


@dataclass(frozen=True)
class Window:
    """When the first and the last expected output record appeared (monotonic seconds)."""

    first: float
    last: float

    @property
    def seconds(self) -> float:
        return max(self.last - self.first, 1e-9)


def watch_outputs(
    offsets: Offsets,
    expected: dict[str, int],
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
    interval: float = 0.05,
    start: dict[str, int] | None = None,
) -> Window:
    """Poll the end offsets of the ``expected`` topics until each grew by its count
    (from ``start``, by default their ends when called).

    ``first`` is the first poll that saw any of them move past its start; ``last`` the
    poll that saw all of them complete. The resolution is ``interval`` plus one round
    of watermark requests (a few ms on loopback).
    """
    if start is None:
        start = offsets.ends(expected)
    targets = {topic: start[topic] + count for topic, count in expected.items()}
    first: float | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = offsets.ends(targets)
        stamp = time.monotonic()
        if first is None and any(now[t] > start[t] for t in targets):
            first = stamp
        if all(now[t] >= target for t, target in targets.items()):
            return Window(first if first is not None else stamp, stamp)
        if not alive():
            raise RuntimeError("the process under test exited before it finished")
        time.sleep(interval)
    raise TimeoutError(f"outputs did not reach {targets} within {timeout:.0f} s")


@dataclass(frozen=True)
class Preloaded:
    """Pre-loaded input: a registration of each of ``users`` on user_registered, then
    ``orders`` orders on order_created."""

    orders: int
    lines: int
    users: int
    skus: int
    seconds: float
    # Bad messages among the orders (bench.poison): each one's dead letter is an output.
    bad: int = 0


def expected_outputs(
    names: TopicNames,
    loaded: Preloaded,
    confirms: bool,
    order_readers: int = 0,
) -> dict[str, int]:
    """Records a system writes for ``loaded``, by topic: a user_order_stats per order, a
    stock_levels per line, a notification per registration (the welcome) and, when it
    ``confirms``, one more per order (the confirmation); and ``order_readers`` dead letters
    per bad message (one per agent that reads order_created)."""
    expected = {
        names.user_order_stats: loaded.orders,
        names.stock_levels: loaded.lines,
        names.notifications: loaded.users + (loaded.orders if confirms else 0),
    }
    if loaded.bad and order_readers:
        expected[TopicNames.dead_letters(names.order_created)] = loaded.bad * order_readers
    return expected


def pipeline_outputs(names: TopicNames, loaded: Preloaded) -> dict[str, int]:
    """``expected_outputs`` of the pipeline the workers run (``pipeline_work``)."""
    work = pipeline_work()
    return expected_outputs(names, loaded, work.confirms, len(work.order_readers))


def registration_stream(users: int, at_ms: int) -> Iterable[tuple[str, dict[str, Any]]]:
    """A registration of each of ``users`` users (the ones ``order_stream`` draws from), as
    (key, record) pairs, registered at ``at_ms``."""
    for index in range(users):
        event = registration(user_id(index), at_ms)
        yield event.key, event.record


def _now_ms() -> int:
    return int(time.time() * 1000)


def order_stream(
    count: int,
    users: int,
    skus: int,
    seed: int = 7,
    start_ms: int | None = None,
    step_ms: float = 1.0,
) -> Iterable[tuple[str, dict[str, Any]]]:
    """``count`` orders of 1 to 4 lines over ``users`` users and ``skus`` SKUs, as
    (key, record) pairs, using the load generator's record builders; each one ``step_ms``
    of event time (created_at, whole milliseconds) after the one before."""
    rng = random.Random(seed)
    start = start_ms if start_ms is not None else _now_ms()
    sequence: dict[str, int] = {}
    prices = [rng.randrange(99, 20_000) for _ in range(skus)]
    for index in range(count):
        buyer = user_id(rng.randrange(users))
        sequence[buyer] = sequence.get(buyer, 0) + 1
        picked = rng.sample(range(skus), rng.randrange(1, min(4, skus) + 1))
        lines = [
            {"sku": f"SKU-{i:06d}", "quantity": rng.randrange(1, 5), "unit_price_cents": prices[i]}
            for i in picked
        ]
        at = start + int((index + 1) * step_ms)
        event = order(buyer, f"{buyer}-o{sequence[buyer]:05d}", lines, at)
        yield event.key, event.record


def bulk_producer(settings: Settings) -> Producer:
    return Producer(
        {
            **producer_config(settings),
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
        }
    )


def produce_all(producer: Producer, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> int:
    """Produce every (key, value), wait for all acknowledgements; raise on any failure."""
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    count = 0
    for key, value in messages:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        count += 1
    producer.flush()
    if failures:
        raise RuntimeError(f"{len(failures)} produce failures, first: {failures[0]}")
    return count


def preload_registrations(
    deployment: Deployment, codecs: Codecs, users: int, producer: Producer | None = None
) -> int:
    """Produce a registration of each of ``users`` users (``registration_stream``) to the
    deployment's user_registered topic; how many."""
    topic = deployment.names.user_registered
    encode = codecs[topic].encode
    return produce_all(
        producer or bulk_producer(deployment.settings),
        topic,
        ((key.encode(), encode(record)) for key, record in registration_stream(users, _now_ms())),
    )


# After the index, key and value of an order: a bad message to produce next, or None.
BadAfter = Callable[[int, bytes, bytes], tuple[bytes, bytes] | None]


def preload_orders(
    deployment: Deployment,
    codecs: Codecs,
    count: int,
    users: int,
    skus: int,
    bad_after: BadAfter | None = None,
) -> Preloaded:
    """Produce a registration of each of ``users`` users to the deployment's user_registered
    topic, then ``count`` Avro orders of theirs to its order_created topic (murmur2), each
    followed by the bad message ``bad_after`` gives for it, if any. Every user is registered
    before the orders are produced, so a system that reads both topics in time order holds
    none (the pipeline may still process an order before its user's registration: it
    holds it until then)."""
    topic = deployment.names.order_created
    codec = codecs[topic]
    lines = bad = 0
    started = time.monotonic()
    producer = bulk_producer(deployment.settings)
    preload_registrations(deployment, codecs, users, producer)

    def messages() -> Iterable[tuple[bytes, bytes]]:
        nonlocal lines, bad
        for index, (key, record) in enumerate(order_stream(count, users, skus)):
            lines += len(record["items"])
            message = key.encode(), codec.encode(record)
            yield message
            poison = bad_after(index, *message) if bad_after is not None else None
            if poison is not None:
                bad += 1
                yield poison

    produce_all(producer, topic, messages())
    return Preloaded(count, lines, users, skus, time.monotonic() - started, bad)


def copy_topic(settings: Settings, source: str, target: str) -> int:
    """Every record of ``source`` (up to its current end) produced again to ``target``,
    key and value bytes unchanged; how many."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"bench-copy-{os.getpid()}",
            "enable.auto.commit": False,
        }
    )
    offsets = Offsets(settings)
    remaining: dict[int, int] = {}
    try:
        for partition in offsets.partitions(source):
            low, high = consumer.get_watermark_offsets(
                TopicPartition(source, partition), timeout=30
            )
            if high > low:
                remaining[partition] = high
        consumer.assign([TopicPartition(source, p, OFFSET_BEGINNING) for p in remaining])

        def records() -> Iterable[tuple[bytes, bytes]]:
            while remaining:
                for message in consumer.consume(num_messages=10_000, timeout=1.0):
                    partition, offset = message.partition(), message.offset()
                    if message.error() is not None or partition is None or offset is None:
                        continue
                    yield message.key() or b"", message.value() or b""
                    if offset + 1 >= remaining.get(partition, 0):
                        remaining.pop(partition, None)

        return produce_all(bulk_producer(settings), target, records())
    finally:
        consumer.close()
        offsets.close()


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    part: str
    what: str
    value: str
    ratio: str = ""
    notes: str = ""


def spread(values: Sequence[float], fmt: str = ",.0f") -> str:
    """``median (min-max, n=k)``."""
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:{fmt}} (n=1)"
    return f"{median:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}}, n={len(values)})"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
