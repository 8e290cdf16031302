"""Table state a worker no longer holds is removed, after a delay.

As Kafka Streams does (``state.cleanup.delay.ms``): the copy of a table partition that
a rebalance took away stays on disk for ``PIPELINE_STATE_CLEANUP_DELAY_S`` (default
600 s). Meanwhile a rebalance that gives it back (a rolling restart) restores only what
was written since, and a view can answer from it while the new owner is away. Then it
is deleted, so a worker's disk and open databases follow its share of the state, active
and standby, not the whole of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from faust.types import AppT, TableT

from pipeline.engine.store import drop_partition, has_partition

log = logging.getLogger(__name__)


@dataclass
class StateCleaner:
    app: AppT
    tables: Mapping[str, TableT[bytes, bytes]]
    partitions: int
    delay_s: float
    # (table, partition) → when it was first seen not held.
    unheld_since: dict[tuple[str, int], float] = field(default_factory=dict)

    def held(self) -> set[tuple[str, int]]:
        """Changelog partitions assigned to this worker, active or standby."""
        assignor = self.app.assignor
        return {
            (tp.topic, tp.partition)
            for tp in assignor.assigned_actives() | assignor.assigned_standbys()
        }

    def sweep(self, now: float | None = None) -> list[tuple[str, int]]:
        """Remove the copies not held for ``delay_s``; the (table, partition) removed."""
        if self.app.rebalancing:  # the assignment is changing: nothing is settled
            return []
        now = time.monotonic() if now is None else now
        held = self.held()
        removed = []
        for name, table in self.tables.items():
            changelog = table.changelog_topic.get_topic_name()
            for partition in range(self.partitions):
                place = (name, partition)
                if (changelog, partition) in held or not has_partition(table.data, partition):
                    self.unheld_since.pop(place, None)
                    continue
                since = self.unheld_since.setdefault(place, now)
                if now - since >= self.delay_s:
                    freed = drop_partition(table.data, partition)
                    del self.unheld_since[place]
                    removed.append(place)
                    log.info("removed %s[%d], no longer held (%d bytes)", name, partition, freed)
        return removed
