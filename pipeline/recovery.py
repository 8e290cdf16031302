"""Faust's table recovery with the end-of-rebalance race fixed (faust-streaming 0.15.3).

When a rebalance's table recovery is over, Faust's ``Recovery.on_recovery_completed``:

1. resumes the stream partitions (changelog recovery has already resumed the fetch flow),
2. awaits ``perform_seek`` (a committed-offset request per assigned partition),
3. calls ``app.flow_control.resume()``, which *empties every agent's queue*.

During step 2 the fetcher already delivers stream records into the agents' queues.
Agents handle a few; step 3 throws away the rest. Those events are never acknowledged
and never fetched again (the fetch position is past them, and a partition without a
committed offset is not seeked at all), so:

- the worker never processes them, and it never commits that partition again: Faust
  commits only up to the first gap in the acknowledged offsets;
- after a restart the partition is read again from the stuck offset, but by then the
  rows have applied later events of the same source partition, so the dropped events
  look like replays (``pipeline.rules.is_new``) and are skipped: lost for good.

The crash soak showed both: order lines at offsets 3-6 of a repartition partition never
applied, its committed offset stuck at 3 until the worker was killed, the views short
of the input forever after. faust-streaming issue 596 describes the same race.

Here the stream partitions stay paused until the seek is done and the queues are
emptied (they can only hold stale events then); only after that are they resumed.
``PipelineTableManager`` (the app's ``TableManager`` setting) builds this Recovery.
"""

from __future__ import annotations

import asyncio
from typing import cast

import faust
from faust.tables import TableManager
from faust.tables.recovery import Recovery

# The Faust version whose Recovery.on_recovery_completed this module replaces
# (tests/unit/test_recovery.py fails when another is installed).
FAUST_VERSION = "0.15.3"


class PipelineRecovery(Recovery):
    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Faust's own, in a safe order: seek, empty the queues, then resume the streams."""
        app = cast(faust.App, self.app)
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id "
                f"{app.consumer_generation_id} param {generation_id}"
            )
            return
        if assignment:
            # The stream partitions are still paused (since the assignment), so nothing
            # reaches the agents from a position the seek is about to change.
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        self.completed.set()
        # Empties every agent's queue: nothing but stale events can be in them now.
        app.flow_control.resume()
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class PipelineTableManager(TableManager):
    """Faust's TableManager with :class:`PipelineRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = PipelineRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
