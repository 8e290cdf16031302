"""In-memory implementations of the runtime's ports (pipeline.streaming.ports), for running
agents without a broker or a Faust worker: the unit tests'."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class MemoryPartitionStore:
    """A table's rows in one dict per partition, with each partition's changelog offset."""

    def __init__(self, changelog_topic: str) -> None:
        self.changelog_topic = changelog_topic
        self.partitions: dict[int, dict[bytes, bytes]] = {}
        self.changelog_offsets: dict[int, int] = {}

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.partitions.get(partition, {}).get(key)

    def write(self, partition: int, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        stored = self.partitions.setdefault(partition, {})
        for key, value in rows:
            if value is None:
                stored.pop(key, None)
            else:
                stored[key] = value

    def scan(self, partition: int, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        stored = self.partitions.get(partition, {})
        return iter(sorted((key, stored[key]) for key in stored if start <= key < end))

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        self.changelog_offsets[partition] = offset

    def rows(self) -> dict[bytes, bytes]:
        """Every partition's rows, by key."""
        return {key: value for rows in self.partitions.values() for key, value in rows.items()}
