"""Whether every derived event is in its topic exactly once, as a ``read_committed``
consumer sees it, asserted (the tally itself: pipeline.dev.audit)."""

from __future__ import annotations

from pipeline.dev.audit import derived_tallies, failures
from pipeline.dev.loadgen import ShopEvent
from pipeline.settings import Settings


def assert_derived_exact(
    settings: Settings, events: list[ShopEvent], guarantee: str, label: str
) -> None:
    """Every derived topic, read ``read_committed``, misses no record, and under
    exactly_once holds none twice (at-least-once may repeat some: counted, printed after
    ``label``)."""
    tallies = derived_tallies(settings, events)
    print(f"\n{label}, read_committed: " + "; ".join(f"{t}: {v}" for t, v in tallies.items()))
    assert not failures(tallies, guarantee), tallies
