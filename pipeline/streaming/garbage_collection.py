"""The worker's garbage collector, set for a steady stream of short-lived objects.

CPython's cyclic collector passes over its youngest generation every 700 net allocations
of container objects and moves what survives to an older one. A batch in hand (hundreds
of events, each an event, a message, a record and their bytes) outlives several such passes,
so the objects of every batch reached the oldest generation, and the passes over that
one walk every object the worker holds. In a worker offered 500-1,000 orders/s those
passes took p50 57-167 ms (the longest 130-386 ms), every one to two seconds, and every
event in flight waited them out. So once the worker has started (``settle``):

- what start-up made (modules, the app, the schemas: about 180,000 objects) is collected
  once and then frozen out of every later pass (``gc.freeze``);
- the youngest generation is passed over after ``YOUNGEST_THRESHOLD`` net allocations
  instead of 700: more than a batch's objects, so a batch's objects are freed (by their
  reference counts, as nearly all are, since they form no cycle) before a pass moves them
  on.

The pauses that remain are timed (``pipeline_gc_pause_seconds``). Measured figures:
bench/RESULTS.md.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

YOUNGEST_THRESHOLD = 10_000


def settle() -> None:
    """Collect and freeze what start-up made; pass over the youngest generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNGEST_THRESHOLD, middle, oldest)


class PauseTimer:
    """Times each collection into ``pauses`` (labelled by generation); a ``gc.callbacks``
    entry once ``install``-ed."""

    def __init__(self, pauses: Histogram) -> None:
        self.by_generation = [pauses.labels(str(generation)) for generation in range(3)]
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].observe(time.perf_counter() - self.started)

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
