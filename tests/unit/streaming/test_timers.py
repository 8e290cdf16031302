from __future__ import annotations

import asyncio
import time

import pytest

from pipeline.streaming import timers
from pipeline.streaming.timers import repeat


def test_the_interval_counts_from_the_start_of_the_previous_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise asyncio.CancelledError  # the worker stops
        await real_sleep(0)

    runs = iter([0.03, 0.08])  # a run shorter than the interval, then a longer one

    async def commit() -> None:
        time.sleep(next(runs))  # blocks, as a commit's round trips would hold it

    monkeypatch.setattr(timers.asyncio, "sleep", sleep)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(repeat(0.05, commit))
    first, after_short, after_long = pauses
    assert 0.04 < first <= 0.05
    assert after_short <= 0.05 - 0.03  # what is left of the interval
    assert after_long == 0.0  # overdue: the next run at once
