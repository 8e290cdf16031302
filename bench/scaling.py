"""Scaling (part 2): the pipeline with two workers against one, on the same input.

Both workers run on this machine, so with 2 cores the second worker competes with the
first, the broker and the registry for CPU: the ratio shows the ceiling of this box,
not of the design.
"""

from __future__ import annotations

from pathlib import Path

from bench import throughput
from bench.common import Row, cores, median, spread

ONE = throughput.pipeline_system(1)
TWO = throughput.pipeline_system(2)


def _scaling_row(results: throughput.Results, baseline: str) -> Row:
    rates = results.rates
    loaded = results.inputs[TWO].loaded
    ratios = [f"{median(rates[TWO]) / median(rates[ONE]):.2f}x {ONE}"]
    for base in (baseline, throughput.BARE_TOPOLOGY):
        if base != ONE and base in rates:
            ratios.append(f"{median(rates[TWO]) / median(rates[base]):.2f}x {base}")
    return Row(
        "2 scaling",
        f"{TWO}: orders/s",
        spread(rates[TWO]),
        ", ".join(ratios),
        f"N={loaded.orders:,} orders ({loaded.lines:,} lines); {cores()} cores shared by "
        "2 workers, broker and registry",
    )


def run(root: Path, orders: int | None, users: int, skus: int, repeats: int) -> list[Row]:
    systems = [ONE, TWO]
    results = throughput.measure(
        root, throughput.sizes(systems, orders), users, skus, repeats, systems
    )
    one = throughput.rows(results, "2 scaling", ONE)[0]
    return [one, _scaling_row(results, ONE)]


def run_with_throughput(
    root: Path, orders: int | None, users: int, skus: int, repeats: int, quix: bool = True
) -> list[Row]:
    """Parts 1 and 2 in one run: both bare loops, one worker, two workers, Quix."""
    systems = [throughput.BARE, throughput.BARE_TOPOLOGY, ONE, TWO]
    systems += [throughput.QUIX] if quix else []
    results = throughput.measure(
        root, throughput.sizes(systems, orders), users, skus, repeats, systems
    )
    two = results.rates.pop(TWO)
    rows = throughput.rows(results, "1 throughput", throughput.BARE)
    results.rates[TWO] = two
    return [*rows, _scaling_row(results, throughput.BARE)]
