"""How a deployment names its topics, what a topic needs (a ``TopicSpec``), and which topics
must share a partition count.

A contract topic (shared by every service) is its name under the deployment's prefix; an
internal one (a repartition topic, a changelog) belongs to one app and carries its id. A
table writes its changelog to the partition of the event being processed, so every topic
that feeds a table must have exactly as many partitions as the table's changelog
(pipeline.kafka.topics creates them and checks that).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from pipeline.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    # Topics in the same group must have the same partition count (co-partitioning):
    # the name of the table whose changelog and sources they are.
    copartition_group: str | None = None
    compacted: bool = False


@dataclass(frozen=True)
class TopicNaming:
    """The topic names of one deployment: its prefix and its app id."""

    prefix: str
    app_id: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(prefix=settings.topic_prefix, app_id=settings.app_id)

    def contract(self, name: str) -> str:
        """A topic of the contract, shared by every service."""
        return self.prefix + name

    def internal(self, name: str) -> str:
        """A topic of this app alone, e.g. a repartition topic."""
        return f"{self.app_id}-{name}"

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
