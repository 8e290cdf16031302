"""The schedule of a worker's periodic tasks (``WorkerEngine.every``): each run due one
interval after the previous one started, so the task's own duration does not stretch
the interval (a transaction's commit round trips would add to every event's latency)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def repeat(interval_s: float, task: Callable[[], Awaitable[None]]) -> None:
    """Await ``task`` every ``interval_s`` seconds, counted from the start of its previous
    run (at once when that took longer), until cancelled."""
    loop = asyncio.get_running_loop()
    due = loop.time() + interval_s
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        due = loop.time() + interval_s
        await task()
