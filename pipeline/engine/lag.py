"""How far behind a worker is, read at every scrape of /metrics.

- Consumer lag, per assigned source partition: the records written that the consumer has not
  fetched yet (high watermark minus fetch position). Records fetched and not yet processed are
  not in it: at most a fetch's worth per partition.
- Standby lag, per changelog partition held as a standby replica: the changelog records its
  table has not applied yet (high watermark minus the store's persisted offset, the last record
  applied, plus one). It is what a view answering from the standby is behind, and what a
  failover to this worker would replay before the partition is served again.

Both high watermarks are as of the consumer's last fetch of the partition; a partition not
fetched yet has no lag reported (rather than a made-up 0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from faust.types import TP, AppT, StoreT

from pipeline.engine.membership import FetchState, fetch_states
from pipeline.streaming.metrics import Lags


def consumer_lag(
    fetched: Mapping[TP, FetchState], changelog_topics: Set[str]
) -> dict[tuple[str, int], int]:
    """Records not fetched yet, per fetched partition that is not a table's changelog."""
    return {
        tp: max(0, state.highwater - state.position)
        for tp, state in fetched.items()
        if tp.topic not in changelog_topics
    }


@dataclass(frozen=True)
class Changelog:
    """A table's changelog topic and its store, which knows the last record it applied."""

    table: str
    store: StoreT[Any, Any]


def standby_lag(
    fetched: Mapping[TP, FetchState], standbys: Iterable[TP], changelogs: Mapping[str, Changelog]
) -> dict[tuple[str, int], int]:
    """Changelog records not applied yet, per standby partition fetched so far."""
    lags = {}
    for tp in standbys:
        state, changelog = fetched.get(tp), changelogs.get(tp.topic)
        if state is None or changelog is None:
            continue
        persisted = changelog.store.persisted_offset(tp)
        applied = persisted + 1 if persisted is not None else 0
        lags[(changelog.table, tp.partition)] = max(0, state.highwater - applied)
    return lags


def read_lags(app: AppT) -> Lags:
    """The worker's lags now (on the app's loop: the stores are not thread-safe)."""
    fetched = fetch_states(app)
    changelogs = {
        table.changelog_topic.get_topic_name(): Changelog(table.name, table.data)
        for table in app.tables.values()
    }
    return Lags(
        consumer=consumer_lag(fetched, changelogs.keys()),
        standby=standby_lag(fetched, app.assignor.assigned_standbys(), changelogs),
    )
