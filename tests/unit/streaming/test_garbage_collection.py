from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from pipeline.streaming.garbage_collection import YOUNGEST_THRESHOLD, PauseTimer, settle
from pipeline.streaming.metrics import Metrics


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


@pytest.mark.usefixtures("restored_collector")
def test_settling_freezes_what_exists_and_passes_over_the_youngest_less_often() -> None:
    gc.unfreeze()
    started_with = object(), [object()]  # containers made "at start-up"
    settle()
    assert gc.get_freeze_count() > 0
    assert not any(thing is started_with for thing in gc.get_objects())  # frozen out
    assert gc.get_threshold()[0] == YOUNGEST_THRESHOLD


@pytest.mark.usefixtures("restored_collector")
def test_every_collection_is_timed_by_generation() -> None:
    metrics = Metrics()
    timer = PauseTimer(metrics.gc_pauses)
    timer.install()
    timer.install()  # once only
    assert gc.callbacks.count(timer) == 1
    gc.collect(1)
    gc.collect(2)
    samples = {
        sample.labels["generation"]: sample.value
        for sample in metrics.registry.collect()
        for sample in sample.samples
        if sample.name == "pipeline_gc_pause_seconds_count"
    }
    assert samples["1"] >= 1 and samples["2"] >= 1
