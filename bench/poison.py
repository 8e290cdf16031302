"""The cost of bad input (part 7): one worker over pre-loaded orders, clean and with one bad
message per 1,000 and per 100 orders among them.

The bad messages rotate through three kinds a real stream carries: random bytes (no
Confluent framing), a Confluent frame under a schema id no registry here handed out (a new
id each time, so each one is asked again for PIPELINE_UNKNOWN_SCHEMA_RECHECK_MS), and an
order under its real schema id with its Avro body cut in half. Each one is keyed by the user
of the order before it, so it lands in an order partition among good orders. Every input
holds the same good orders; the rate is good orders per second, timed as part 1 times it,
with the dead letters as one more output. After each run the dead-letter topic must hold
every bad message, key and value byte for byte, once per agent that reads orders (with issue
28's join, ``orders`` and ``notifications``: header ``dlq.agent``).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    Row,
    cores,
    make_deployment,
    median,
    pipeline_work,
    preload_orders,
    prepare,
    run_id,
    spread,
)
from bench.throughput import Input, pipeline_system, run_deployment, run_pipeline
from pipeline.dev.audit import read_topic
from pipeline.dev.workers import Deployment
from pipeline.serde.codec import HEADER_SIZE, frame
from pipeline.streaming.dead_letters import AGENT
from pipeline.topics import TopicNames

PART = "7 poison"
DEFAULT_ORDERS = 40_000
# Bad messages per good order: none, one per 1,000, one per 100.
EVERY = (0, 1_000, 100)
RANDOM_BYTES, UNKNOWN_ID, TRUNCATED = "random bytes", "unknown schema id", "truncated body"
KINDS = (RANDOM_BYTES, UNKNOWN_ID, TRUNCATED)
# Far above any id the local registry hands out: each bad frame gets one of its own.
UNKNOWN_IDS_FROM = 900_000_000


def bad_value(kind: str, index: int, good: bytes, rng: random.Random) -> bytes:
    """The ``index``-th bad message, of ``kind``, made from ``good`` (an encoded order)."""
    if kind == RANDOM_BYTES:
        # A first byte other than the magic byte 0: never mistaken for a framed message.
        return bytes([rng.randrange(1, 256)]) + rng.randbytes(rng.randrange(0, 64))
    if kind == UNKNOWN_ID:
        return frame(UNKNOWN_IDS_FROM + index, good[HEADER_SIZE:])
    return good[: HEADER_SIZE + (len(good) - HEADER_SIZE) // 2]


@dataclass
class PoisonedInput:
    """One input of good orders with a bad message after every ``every``-th one (0: none)."""

    every: int
    source: Input
    bad: list[tuple[bytes, bytes]]

    @property
    def label(self) -> str:
        return "clean" if not self.every else f"1 bad per {self.every:,}"


def preload(root: Path, orders: int, users: int, skus: int, every: int) -> PoisonedInput:
    deployment = make_deployment(f"bench-{run_id()}", root / f"input-{every}")
    rng = random.Random(every)
    bad: list[tuple[bytes, bytes]] = []

    def bad_after(index: int, key: bytes, good: bytes) -> tuple[bytes, bytes] | None:
        if not every or (index + 1) % every:
            return None
        kind = KINDS[len(bad) % len(KINDS)]
        bad.append((key, bad_value(kind, len(bad), good, rng)))
        return bad[-1]

    loaded = preload_orders(deployment, prepare(deployment), orders, users, skus, bad_after)
    return PoisonedInput(every, Input(deployment, loaded), bad)


def check_dead_letters(
    run: Deployment, bad: Sequence[tuple[bytes, bytes]], agents: Sequence[str], label: str
) -> None:
    """Every bad message is in the run's dead-letter topic, byte for byte, once per agent of
    ``agents`` (those that read order_created), named by its ``dlq.agent`` header. A dead
    letter without one (a pipeline from before agents were named) is the only agent's."""
    topic = TopicNames.dead_letters(run.names.order_created)
    only = agents[0] if len(agents) == 1 else ""
    letters = Counter(
        (dict(r.headers).get(AGENT, b"").decode() or only, r.key or b"", r.value or b"")
        for r in read_topic(run.settings, topic)
    )
    wanted = Counter((agent, key, value) for agent in agents for key, value in bad)
    if letters != wanted:
        missing = sum((wanted - letters).values())
        extra = sum((letters - wanted).values())
        raise AssertionError(
            f"{label}: {topic} holds {sum(letters.values())} dead letters for {len(bad)} bad "
            f"messages and agents {', '.join(agents)} ({missing} missing or changed, "
            f"{extra} not expected)"
        )


def run(
    root: Path,
    orders: int | None,
    users: int,
    skus: int,
    repeats: int,
    guarantees: Sequence[str] = ("at_least_once",),
    every: Sequence[int] = EVERY,
) -> list[Row]:
    """One worker under each of ``guarantees`` over each input (clean first), the runs
    interleaved across ``repeats``; a row per input and guarantee, its ratio to the clean
    rate of the same guarantee."""
    count = orders if orders is not None else DEFAULT_ORDERS
    inputs = []
    for bad_every in dict.fromkeys((0, *every)):
        print(
            f"pre-loading {count:,} orders, {f'1 per {bad_every:,}' if bad_every else 'no'} bad",
            flush=True,
        )
        inputs.append(preload(root, count, users, skus, bad_every))
    rates: dict[tuple[str, int], list[float]] = {}
    agents = pipeline_work().order_readers
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}", flush=True)
        for guarantee in guarantees:
            for poisoned in inputs:
                label = f"{guarantee}-{poisoned.every}-r{repeat}"
                deployment = run_deployment(poisoned.source, label, guarantee)
                window = run_pipeline(poisoned.source, deployment, 1, guarantee)
                check_dead_letters(deployment, poisoned.bad, agents, label)
                rate = count / window.seconds
                rates.setdefault((guarantee, poisoned.every), []).append(rate)
                print(
                    f"  {pipeline_system(1, guarantee):<26} {poisoned.label:<18} "
                    f"{rate:>8,.0f} orders/s ({window.seconds:.1f} s)",
                    flush=True,
                )
    out = []
    for guarantee in guarantees:
        clean = median(rates[(guarantee, 0)])
        for poisoned in inputs:
            measured = rates[(guarantee, poisoned.every)]
            loaded = poisoned.source.loaded
            kinds = (
                f"{loaded.bad:,} bad ({', '.join(KINDS)}), all dead-lettered byte for byte "
                f"by {', '.join(agents)}; "
            )
            out.append(
                Row(
                    PART,
                    f"{pipeline_system(1, guarantee)}, {poisoned.label}: orders/s",
                    spread(measured),
                    f"{median(measured) / clean:.2f}x clean" if poisoned.every else "",
                    (kinds if loaded.bad else "")
                    + f"N={loaded.orders:,} orders ({loaded.lines:,} lines), {cores()} cores",
                )
            )
    return out
