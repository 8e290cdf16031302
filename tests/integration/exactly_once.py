"""Whether every derived event is in its topic exactly once, as a ``read_committed``
consumer sees it: duplicates and missing records per derived topic, computed from the
input (tests/integration/expected.py), not from the pipeline's rules."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from pipeline.dev.loadgen import CONTRACT, ShopEvent
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.topics import TopicNames
from tests.integration import expected
from tests.integration.harness import decoded, read_topic


@dataclass(frozen=True)
class Tally:
    records: int
    duplicates: int
    missing: int

    def __str__(self) -> str:
        return f"{self.records} records, {self.duplicates} duplicates, {self.missing} missing"


def excess(have: Counter[object], want: Counter[object]) -> tuple[int, int]:
    """(more than wanted, fewer than wanted), summed over every value."""
    return sum((have - want).values()), sum((want - have).values())


def derived_tallies(settings: Settings, events: list[ShopEvent]) -> dict[str, Tally]:
    """By derived topic (and the re-keyed order lines): what it holds against once each."""
    names = TopicNames.from_settings(settings)
    codecs = Codecs.from_settings(settings)
    codecs.prepare()
    tallies: dict[str, Tally] = {}

    # One record per order, its count the user's running order count: 1..n once each.
    stats = decoded(codecs, names.user_order_stats, read_topic(settings, names.user_order_stats))
    have: Counter[object] = Counter((s["user_id"], s["order_count"]) for s in stats)
    want: Counter[object] = Counter(
        (user_id, count)
        for user_id, user in expected.user_stats(events).items()
        for count in range(1, user.order_count + 1)
    )
    tallies[names.user_order_stats] = Tally(len(stats), *excess(have, want))

    # One record per stock change: the steps between a SKU's levels (in partition order,
    # from 0) are its deltas, once each. A repeated record adds a step of 0.
    levels: dict[str, list[int]] = defaultdict(list)
    read_levels = decoded(codecs, names.stock_levels, read_topic(settings, names.stock_levels))
    for level in read_levels:
        levels[level["sku"]].append(level["available"])
    steps: Counter[object] = Counter()
    for sku, values in levels.items():
        for before, after in zip([0, *values], values, strict=False):
            steps[(sku, after - before)] += 1
    deltas: Counter[object] = Counter()
    for event in events:
        if event.stream == CONTRACT.stock_adjusted:
            deltas[(event.key, event.record["delta"])] += 1
        elif event.stream == CONTRACT.order_created:
            for item in event.record["items"]:
                deltas[(item["sku"], -item["quantity"])] += 1
    tallies[names.stock_levels] = Tally(len(read_levels), *excess(steps, deltas))

    # One alert per downward crossing of the threshold in those levels.
    alerts = decoded(codecs, names.low_stock_alerts, read_topic(settings, names.low_stock_alerts))
    have = Counter((alert["sku"], alert["available"]) for alert in alerts)
    want = Counter(
        (sku, level)
        for sku, values in levels.items()
        for level in expected.crossings(values, settings.low_stock_threshold)
    )
    tallies[names.low_stock_alerts] = Tally(len(alerts), *excess(have, want))

    # One notification per registration.
    notes = decoded(codecs, names.notifications, read_topic(settings, names.notifications))
    have = Counter(note["user_id"] for note in notes)
    want = Counter(e.key for e in events if e.stream == CONTRACT.user_registered)
    tallies[names.notifications] = Tally(len(notes), *excess(have, want))

    # One re-keyed record per order line (each carries its origin, so repeats are equal).
    lines = read_topic(settings, names.order_lines_by_sku)
    unique = len({(line.key, line.value) for line in lines})
    wanted = sum(len(e.record["items"]) for e in events if e.stream == CONTRACT.order_created)
    tallies[names.order_lines_by_sku] = Tally(
        len(lines), len(lines) - unique, max(0, wanted - unique)
    )
    return tallies


def assert_derived_exact(
    settings: Settings, events: list[ShopEvent], guarantee: str, label: str
) -> None:
    """Every derived topic, read ``read_committed``, misses no record, and under
    exactly_once holds none twice (at-least-once may repeat some: counted, printed after
    ``label``)."""
    tallies = derived_tallies(settings, events)
    print(f"\n{label}, read_committed: " + "; ".join(f"{t}: {v}" for t, v in tallies.items()))
    assert not [t for t, tally in tallies.items() if tally.missing], tallies
    if guarantee == "exactly_once":
        assert not [t for t, tally in tallies.items() if tally.duplicates], tallies
