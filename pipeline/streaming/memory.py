"""In-memory implementations of the runtime's ports (pipeline.streaming.ports), for running
agents without a broker or a Faust worker: the unit tests'."""

from __future__ import annotations

from collections.abc import Iterable


class MemoryPartitionStore:
    """A table's rows in one dict per partition, with each partition's changelog offset."""

    def __init__(self, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        self.partitions: dict[int, dict[bytes, bytes]] = {}
        self.changelog_offsets: dict[int, int] = {}

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def write(self, partition: int, rows: Iterable[tuple[bytes, bytes]]) -> None:
        self.partitions.setdefault(partition, {}).update(rows)

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        self.changelog_offsets[partition] = offset

    def rows(self) -> dict[bytes, bytes]:
        """Every partition's rows, by key."""
        return {key: value for rows in self.partitions.values() for key, value in rows.items()}
