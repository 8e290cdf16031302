"""Benchmarks of the pipeline on the local stack; not part of the test suite.

    python -m bench all                          # every part, one table, bench/RESULTS.md
    python -m bench throughput --orders 20000    # one part, small, for a quick check
    python -m bench windowed --repeats 2         # the analytics service vs Quix windows
    python -m bench poison --repeats 2           # bad messages among the orders: their cost
    python -m bench --commit-interval-ms 100 throughput --no-bare --no-quix \
        --guarantee at_least_once --guarantee exactly_once   # the cost of exactly-once
    python -m bench sustained --no-quix --sustained-rate 500 \
        --guarantee at_least_once --guarantee exactly_once

Start a stack of its own first, so the shared one is left alone:

    PIPELINE_STACK_DIR=/tmp/bench-stack pipeline stack up
    PIPELINE_ENV_FILE=/tmp/bench-stack/stack.env python -m bench all
"""

from __future__ import annotations

import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from bench import (
    codec_part,
    latency,
    memory,
    poison,
    profile,
    recovery,
    scaling,
    sustained,
    throughput,
    windowed,
)
from bench.common import BENCH_DIR, Row, use_pipeline_commit
from bench.report import publish
from pipeline.settings import PROCESSING_GUARANTEES

F = TypeVar("F", bound=Callable[..., Any])
RESULTS = BENCH_DIR / "RESULTS.md"


def command_line() -> str:
    return "python -m bench " + shlex.join(sys.argv[1:])


def workdir() -> Path:
    """Worker data dirs and logs of this run (kept for inspection)."""
    root = BENCH_DIR / "runs"
    root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="run-", dir=root))


def output_option(default: Path | None) -> Callable[[F], F]:
    return click.option(
        "--output",
        type=click.Path(dir_okay=False, path_type=Path),
        default=default,
        show_default=True,
        help="Also write the table here as Markdown.",
    )


def guarantee_option(func: F) -> F:
    return click.option(
        "--guarantee",
        "guarantees",
        type=click.Choice(PROCESSING_GUARANTEES),
        multiple=True,
        default=("at_least_once",),
        show_default=True,
        help="Run the pipeline worker under this processing guarantee (repeatable: each one, "
        "interleaved, in one run).",
    )(func)


def size_options(func: F) -> F:
    func = click.option(
        "--skus", default=2_000, show_default=True, help="Distinct SKUs in the orders."
    )(func)
    func = click.option(
        "--users",
        default=20_000,
        show_default=True,
        help="Users, each registered before the orders, which are drawn from them.",
    )(func)
    func = click.option(
        "--repeats", default=3, show_default=True, help="Runs of each system; median shown."
    )(func)
    return click.option(
        "--orders",
        type=int,
        default=None,
        help="Orders pre-loaded for every system (default: each system's own, 20 s or more "
        "of its work here; see bench.throughput.DEFAULT_ORDERS).",
    )(func)


@click.group()
@click.option(
    "--pipeline-commit",
    default="HEAD",
    show_default=True,
    help="Workers run pipeline/ as committed here (git archive), or 'worktree' as it is.",
)
@click.option(
    "--commit-interval-ms",
    type=int,
    default=None,
    help="PIPELINE_COMMIT_INTERVAL_MS for the workers (exactly_once: the transactions' span).",
)
def main(pipeline_commit: str, commit_interval_ms: int | None) -> None:
    """Benchmarks of the pipeline on the local stack; each part alone or all of them."""
    if commit_interval_ms is not None:
        # Workers inherit the environment (bench.common.base_env).
        os.environ["PIPELINE_COMMIT_INTERVAL_MS"] = str(commit_interval_ms)
    commit = use_pipeline_commit(pipeline_commit)
    print(f"workers run the pipeline at {commit}", flush=True)


@main.command("throughput")
@size_options
@click.option("--quix/--no-quix", default=True, show_default=True, help="Run the Quix peer.")
@click.option("--bare/--no-bare", default=True, show_default=True, help="Run the bare loops.")
@guarantee_option
@output_option(None)
def throughput_command(
    orders: int | None,
    repeats: int,
    users: int,
    skus: int,
    quix: bool,
    bare: bool,
    guarantees: tuple[str, ...],
    output: Path | None,
) -> None:
    """Part 1: one worker vs the bare loops (stateless, topology) vs the Quix Streams peer."""
    rows = throughput.run(
        workdir(), orders, users, skus, repeats, quix=quix, guarantees=guarantees, bare=bare
    )
    publish(rows, command_line(), output)


@main.command("windowed")
@click.option(
    "--orders",
    default=windowed.DEFAULT_ORDERS,
    show_default=True,
    help="Orders pre-loaded over the hours of event time (closing orders added).",
)
@click.option("--users", default=20_000, show_default=True, help="Users the orders are drawn from.")
@click.option("--skus", default=2_000, show_default=True, help="Distinct SKUs in the orders.")
@click.option("--repeats", default=2, show_default=True, help="Runs of each system, alternating.")
@click.option("--quix/--no-quix", default=True, show_default=True, help="Run the Quix peer.")
@output_option(None)
def windowed_command(
    orders: int, users: int, skus: int, repeats: int, quix: bool, output: Path | None
) -> None:
    """Part 9: the analytics service (event-time windows) vs the same windows in Quix."""
    rows = windowed.run(workdir(), orders, users, skus, repeats, quix=quix)
    publish(rows, command_line(), output)


@main.command("scaling")
@size_options
@output_option(None)
def scaling_command(
    orders: int | None, repeats: int, users: int, skus: int, output: Path | None
) -> None:
    """Part 2: one worker vs two workers, same input."""
    publish(scaling.run(workdir(), orders, users, skus, repeats), command_line(), output)


@main.command("latency")
@click.option(
    "--rate",
    "rates",
    type=float,
    multiple=True,
    default=(100.0, 200.0),
    show_default=True,
    help="Orders offered per second (repeatable); keep it below one worker's throughput.",
)
@click.option("--seconds", default=30.0, show_default=True, help="How long to offer them.")
@click.option("--repeats", default=3, show_default=True, help="Runs, each with a fresh worker.")
@output_option(None)
def latency_command(
    rates: tuple[float, ...], seconds: float, repeats: int, output: Path | None
) -> None:
    """Part 3: produce time to the order's user_order_stats and stock_levels, at fixed rates."""
    root = workdir()
    rows = [latency.raw_round_trip(root, "3 latency")]
    rows += [row for rate in rates for row in latency.run(root, rate, seconds, repeats)]
    publish(rows, command_line(), output)


def sustained_options(func: F) -> F:
    func = click.option(
        "--sustained-rate",
        "sustained_rates",
        type=float,
        multiple=True,
        default=sustained.RATES,
        show_default=True,
        help="Sustained: orders/s offered (repeatable).",
    )(func)
    return click.option(
        "--sustained-seconds",
        default=20.0,
        show_default=True,
        help="Sustained: seconds each rate is offered.",
    )(func)


@main.command("sustained")
@sustained_options
@click.option("--repeats", default=1, show_default=True, help="Runs of each system at each rate.")
@click.option("--quix/--no-quix", default=True, show_default=True, help="Run the Quix peer.")
@guarantee_option
@output_option(None)
def sustained_command(
    sustained_rates: tuple[float, ...],
    sustained_seconds: float,
    repeats: int,
    quix: bool,
    guarantees: tuple[str, ...],
    output: Path | None,
) -> None:
    """Offered rate against p50/p99 latency: one worker and the Quix peer, steady input."""
    rows = sustained.run(
        workdir(), sustained_rates, sustained_seconds, repeats, quix=quix, guarantees=guarantees
    )
    publish(rows, command_line(), output)


@main.command("recovery")
@click.option(
    "--keys", default=1_000_000, show_default=True, help="User-stats rows in the changelog."
)
@output_option(None)
def recovery_command(keys: int, output: Path | None) -> None:
    """Parts 4 and 5: restart with and without the state dir; peak RSS with the keys."""
    publish(recovery.run(workdir(), keys), command_line(), output)


@main.command("memory")
@click.option(
    "--dbs",
    "counts",
    type=int,
    multiple=True,
    default=memory.COUNTS,
    show_default=True,
    help="Partition databases one table holds (repeatable).",
)
@click.option(
    "--per-db-mib",
    default=8.0,
    show_default=True,
    help="MiB of rows written into each database (the old 8 MiB memtables fill once).",
)
@click.option(
    "--budget-mb",
    "budgets_mb",
    type=int,
    multiple=True,
    default=memory.BUDGETS_MB,
    show_default=True,
    help="PIPELINE_STATE_MEMORY_MB of the bounded runs (repeatable).",
)
@output_option(None)
def memory_command(
    counts: tuple[int, ...],
    per_db_mib: float,
    budgets_mb: tuple[int, ...],
    output: Path | None,
) -> None:
    """Part 8: RSS against the number of RocksDB partition databases, before and after the
    one memory budget (each measure in a fresh process; no stack needed)."""
    publish(memory.run(counts, per_db_mib, budgets_mb), command_line(), output)


@main.command("poison")
@size_options
@guarantee_option
@click.option(
    "--every",
    type=int,
    multiple=True,
    default=poison.EVERY[1:],
    show_default=True,
    help="One bad message per this many orders (repeatable); a clean input always runs.",
)
@output_option(None)
def poison_command(
    orders: int | None,
    repeats: int,
    users: int,
    skus: int,
    guarantees: tuple[str, ...],
    every: tuple[int, ...],
    output: Path | None,
) -> None:
    """Part 7: one worker over clean orders and over orders with bad messages among them
    (default N: bench.poison.DEFAULT_ORDERS)."""
    rows = poison.run(workdir(), orders, users, skus, repeats, guarantees, every)
    publish(rows, command_line(), output)


@main.command("profile")
@click.option("--orders", default=profile.ORDERS, show_default=True)
@click.option("--top", default=15, show_default=True, help="Functions listed.")
def profile_command(orders: int, top: int) -> None:
    """Where one worker's time goes (py-spy record over a pre-loaded run)."""
    rows, text = profile.run(workdir(), orders, top)
    publish(rows, command_line(), None, [("profile", text)])


@main.command("codec")
@click.option("--records", default=20_000, show_default=True)
@click.option("--repeats", default=7, show_default=True)
def codec_command(records: int, repeats: int) -> None:
    """Part 6: bench.codec's micro-benchmark."""
    publish([], command_line(), None, [("codec", codec_part.run(records, repeats))])


@main.command("all")
@size_options
@click.option(
    "--rate",
    "rates",
    type=float,
    multiple=True,
    default=(100.0, 200.0),
    show_default=True,
    help="Latency: orders/s offered (repeatable).",
)
@click.option("--seconds", default=30.0, show_default=True, help="Latency: seconds offered.")
@sustained_options
@click.option("--keys", default=1_000_000, show_default=True, help="Recovery: user rows.")
@click.option("--quix/--no-quix", default=True, show_default=True)
@output_option(RESULTS)
def all_command(
    orders: int | None,
    repeats: int,
    users: int,
    skus: int,
    rates: tuple[float, ...],
    seconds: float,
    sustained_rates: tuple[float, ...],
    sustained_seconds: float,
    keys: int,
    quix: bool,
    output: Path | None,
) -> None:
    """Every part on one input where parts share one; one table."""
    root = workdir()
    rows: list[Row] = []
    rows += scaling.run_with_throughput(root, orders, users, skus, repeats, quix=quix)
    rows.append(latency.raw_round_trip(root, "3 latency"))
    for rate in rates:
        rows += latency.run(root, rate, seconds, repeats)
    rows += sustained.run(root, sustained_rates, sustained_seconds, 1, quix=quix)
    rows += recovery.run(root, keys)
    rows += poison.run(root, None, users, skus, repeats)
    rows += windowed.run(root, None, users, skus, repeats, quix=quix)
    profile_rows, profile_text = profile.run(root, orders or profile.ORDERS, 15)
    rows += profile_rows
    extra = [
        ("Profile of one worker (py-spy)", profile_text),
        ("Codec micro-benchmark (bench/codec.py)", codec_part.run(20_000, 7)),
    ]
    publish(rows, command_line(), output, extra)


if __name__ == "__main__":
    main()
