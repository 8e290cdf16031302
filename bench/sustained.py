"""Sustained rate: offered orders/s against p50/p99 latency, one pipeline worker and the Quix
peer, on a steady stream rather than a backlog.

At each offered rate (250 to 4,000 orders/s by default), each system runs once per repeat on
a fresh deployment, the two interleaved, and is measured as in the latency part
(bench.latency: the probe process, produce to user_order_stats, to the order's last
stock_levels event and, with issue 28's join, to its confirmation, the first 5 s left out,
an order not out within the grace period infinitely late). A rate is sustained when the p99
of every output stays under ``LIMIT_MS`` (so every order came out) in every repeat. The
summary is each system's highest rate with every rate up to it sustained, and the ratio of
the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from bench.common import EXACTLY_ONCE, Row, cores, median
from bench.latency import PIPELINE, QUIX, WARMUP, Live, measure_once, raw_round_trip
from bench.probe import ms

PART = "3 sustained"
RATES = (250.0, 500.0, 1_000.0, 2_000.0, 4_000.0)
LIMIT_MS = 100.0


def sustained(runs: Sequence[Live]) -> bool:
    """Every repeat kept every output's p99 under the limit, with nothing left behind."""
    return all(live.p99() < LIMIT_MS for live in runs)


def highest_sustained(by_rate: dict[float, list[Live]]) -> float:
    """The highest rate below which every offered rate was sustained too (0: not even the
    lowest): a rate that passes above one that failed is noise, not capacity."""
    best = 0.0
    for rate in sorted(by_rate):
        if not sustained(by_rate[rate]):
            break
        best = rate
    return best


def _figure(values: Sequence[float]) -> str:
    if len(values) == 1:
        return ms(values[0])
    return f"{ms(median(values))} ({ms(min(values))}-{ms(max(values))}, n={len(values)})"


def _times(value: float, base: float) -> str:
    """``value / base`` as "1.23x"; "n/a" unless both are finite (an output never came)."""
    if not (math.isfinite(value) and math.isfinite(base)) or base <= 0:
        return "n/a"
    return f"{value / base:,.2f}x"


def _row(system: str, rate: float, runs: list[Live], peer: list[Live] | None) -> Row:
    stats = [live.stats for live in runs]
    levels = [live.levels for live in runs]
    transport = [live.transport for live in runs]
    value = (
        f"stats p50 {_figure([s.p50 for s in stats])} / p99 {_figure([s.p99 for s in stats])}; "
        f"stock p50 {_figure([s.p50 for s in levels])} / p99 {_figure([s.p99 for s in levels])} ms"
    )
    confirmations = [live.confirmations for live in runs if live.confirmations is not None]
    if confirmations:
        value += (
            f"; confirmation p50 {_figure([c.p50 for c in confirmations])} / p99 "
            f"{_figure([c.p99 for c in confirmations])} ms"
        )
    missing = sum(output.missing for live in runs for output in live.outputs())
    if missing:
        value += f" ({missing:,} outputs not out within the grace period: never)"
    p99 = median([live.p99() for live in runs])
    ratios = [f"p99 {_times(p99, median([t.p99 for t in transport]))} transport"]
    if peer is not None:
        ratios.append(f"p99 {_times(p99, median([live.p99() for live in peer]))} {QUIX}")
    return Row(
        PART,
        f"{system} at {rate:,.0f} orders/s offered",
        value,
        ", ".join(ratios),
        f"offered {_figure([live.offered for live in runs])}/s, "
        f"transport p50 {_figure([t.p50 for t in transport])} / p99 "
        f"{_figure([t.p99 for t in transport])} ms; "
        + ("sustained" if sustained(runs) else f"not sustained (p99 >= {LIMIT_MS:.0f} ms)"),
    )


def run(
    root: Path,
    rates: Sequence[float] = RATES,
    seconds: float = 20.0,
    repeats: int = 1,
    quix: bool = True,
    guarantees: Sequence[str] = ("at_least_once",),
) -> list[Row]:
    pipelines = [
        f"{PIPELINE} {EXACTLY_ONCE}" if g == EXACTLY_ONCE else PIPELINE for g in guarantees
    ]
    systems = pipelines + ([QUIX] if quix else [])
    rows = [raw_round_trip(root, PART)]
    results: dict[str, dict[float, list[Live]]] = {system: {} for system in systems}
    for rate in rates:
        for repeat in range(repeats):
            for system in systems:
                label = f"sustained{rate:.0f}-{system.replace(' ', '')}-r{repeat}"
                live = measure_once(root, label, system, rate, seconds)
                results[system].setdefault(rate, []).append(live)
        for system in systems:
            peer = results[QUIX][rate] if system != QUIX and quix else None
            rows.append(_row(system, rate, results[system][rate], peer))
    best = {system: highest_sustained(by_rate) for system, by_rate in results.items()}
    for system in systems:
        ratio = ""
        if system != QUIX and quix:
            ratio = f"{best[system] / best[QUIX]:.2f}x {QUIX}" if best[QUIX] else f"{QUIX}: none"
        rows.append(
            Row(
                PART,
                f"{system}: highest offered rate with p99 < {LIMIT_MS:.0f} ms",
                f"{best[system]:,.0f} orders/s" if best[system] else "none of those offered",
                ratio,
                f"rates {', '.join(f'{r:,.0f}' for r in rates)}/s, {seconds:.0f} s each, "
                f"{repeats} repeat(s), 1 process, first {WARMUP:.0f} s left out, "
                f"{cores()} cores",
            )
        )
    return rows
