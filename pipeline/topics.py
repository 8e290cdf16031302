"""Every topic of the pipeline in one place: names, and which must be co-partitioned.

A table writes its changelog to the partition of the event being processed, so
every topic that feeds a table must have exactly as many partitions as the
table's changelog (pipeline.kafka.topics creates them and checks that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    # Topics in the same group must have the same partition count (co-partitioning):
    # the name of the table whose changelog and sources they are.
    copartition_group: str | None = None
    compacted: bool = False


@dataclass(frozen=True)
class TopicNames:
    """The names of all topics for one deployment (app id and optional prefix).

    Contract topics are shared by every service; internal ones
    (repartition topics, changelogs) belong to one app and carry its id.
    """

    prefix: str
    app_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> TopicNames:
        return cls(prefix=settings.topic_prefix, app_id=settings.app_id)

    def _contract(self, name: str) -> str:
        return self.prefix + name

    @property
    def user_registered(self) -> str:
        return self._contract("user_registered")

    @property
    def order_created(self) -> str:
        return self._contract("order_created")

    @property
    def stock_adjusted(self) -> str:
        return self._contract("stock_adjusted")

    @property
    def user_order_stats(self) -> str:
        return self._contract("user_order_stats")

    @property
    def stock_levels(self) -> str:
        return self._contract("stock_levels")

    @property
    def low_stock_alerts(self) -> str:
        return self._contract("low_stock_alerts")

    @property
    def notifications(self) -> str:
        return self._contract("notifications")

    @property
    def user_points(self) -> str:
        return self._contract("user_points")

    def internal(self, name: str) -> str:
        """A topic of this app alone, e.g. a repartition topic."""
        return f"{self.app_id}-{name}"

    @property
    def order_lines_by_sku(self) -> str:
        """Order lines re-keyed by SKU, from the orders agent to the stock agent."""
        return self.internal("order_lines_by_sku")

    def changelog(self, table: str) -> str:
        # Faust's own naming, so its table machinery finds the topics we create.
        return self.internal(f"{table}-changelog")

    @staticmethod
    def dead_letters(topic: str) -> str:
        return f"{topic}.dlq"

    def logical(self, topic: str) -> str:
        """A contract topic's name without the deployment's prefix."""
        return topic.removeprefix(self.prefix)


def copartitioning_problems(
    specs: Iterable[TopicSpec], partitions: Mapping[str, int], expected: int
) -> list[str]:
    """What is wrong with the existing partition counts, one line per group at fault.

    Every topic of a co-partitioned group must have ``expected`` partitions: the
    tables declare that many for their changelogs and the web router hashes keys
    over that many.
    """
    groups: dict[str, dict[str, int]] = {}
    for spec in specs:
        if spec.copartition_group is not None and spec.name in partitions:
            groups.setdefault(spec.copartition_group, {})[spec.name] = partitions[spec.name]
    problems = []
    for group, counts in sorted(groups.items()):
        wrong = {name: count for name, count in counts.items() if count != expected}
        if wrong:
            listing = ", ".join(f"{name}={count}" for name, count in sorted(wrong.items()))
            problems.append(
                f"the topics of table {group!r} must all have {expected} partitions "
                f"(PIPELINE_PARTITIONS) to stay co-partitioned, found {listing}"
            )
    return problems
