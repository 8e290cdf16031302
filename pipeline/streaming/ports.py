"""What the runtime's core needs of the engine that runs it, as protocols: the records it
consumes (``Message``, ``Event``), where a batch of them comes from and is acknowledged
(``Arrivals``) and which partitions it is assigned (``Assignment``), a table's partitions
(``PartitionStore``), what runs a service's agents (``Engine``) and, for a worker in a
consumer group, its timers and the group membership a transaction commits under
(``WorkerEngine``, ``GroupMember``). pipeline.engine implements them on Faust; the test
harness (pipeline.streaming.testing) and the unit tests in memory.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

# A record's headers as the consumer hands them over.
MessageHeaders = Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None


class Message(Protocol):
    """A consumed record."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> MessageHeaders: ...


class Event(Protocol):
    """A consumed record as an agent is handed it."""

    @property
    def message(self) -> Message: ...


class Arrivals(Protocol):
    """Where an agent's events come from, in batches, where each is acknowledged, and
    which of its sources' partitions this worker is assigned."""

    async def take(self, limit: int) -> list[Event]:
        """The events that arrived, at least one (waited for), at most ``limit``; none
        once the agent stops."""
        ...

    def ack(self, event: Event) -> None:
        """``event`` was processed: its offset may be committed."""
        ...

    def held(self) -> Assignment:
        """The partitions of the agent's source topics this worker is assigned now; none
        while a rebalance is under way."""
        ...


class PartitionStore(Protocol):
    """A table's rows, one store per partition this worker holds, ordered by key, with the
    offset of the last changelog record each holds."""

    @property
    def changelog_topic(self) -> str: ...

    def read(self, partition: int, key: bytes) -> bytes | None:
        """``key``'s value in ``partition``; None when it has none."""
        ...

    def write(self, partition: int, rows: Iterable[tuple[bytes, bytes | None]]) -> None:
        """Store ``rows`` (key, value) in ``partition``, in one write; a None value deletes
        the key (a changelog tombstone)."""
        ...

    def scan(self, partition: int, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The rows of ``partition`` whose keys are in ``[start, end)``, in key order."""
        ...

    def set_changelog_offset(self, partition: int, offset: int) -> None:
        """``partition`` holds the changelog up to ``offset`` (the last record written)."""
        ...


@dataclass(frozen=True)
class Assignment:
    """The partitions of an agent's sources this worker is assigned, in the consumer
    group's generation that assigned them (none while a rebalance is under way)."""

    generation: int
    partitions: frozenset[int]


@dataclass(frozen=True)
class GroupMember:
    """This worker's membership of its consumer group, as the group coordinator knows
    it: a transaction's offsets are committed under it, and the broker rejects them
    once the group has moved on without this member (KIP-447)."""

    group_id: str
    generation_id: int  # -1 while not a member
    member_id: str  # empty while not a member
    group_instance_id: str | None  # static membership (KIP-345)


class Engine(Protocol):
    """What runs a service's agents: their sources, their tables' stores, and word of the
    rebalances that move partitions between workers."""

    def partition_store(self, table: str) -> PartitionStore:
        """``table``'s partitions this worker holds (one store per table)."""
        ...

    def run_agent(
        self, name: str, topics: Sequence[str], consume: Callable[[Arrivals], Awaitable[None]]
    ) -> None:
        """Run agent ``name``: ``consume`` the arrivals of ``topics``, for as long as the
        worker runs."""
        ...

    def on_rebalance(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` as a rebalance starts and once it ended: the partitions held
        may change, and others than the agents write the stores in between (restores,
        recovery, standbys)."""
        ...


class WorkerEngine(Engine, Protocol):
    """The engine of a worker in its consumer group: timers, and its membership."""

    def every(self, interval_s: float, task: Callable[[], Awaitable[None]]) -> None:
        """Await ``task`` every ``interval_s`` seconds while the worker runs, counted from
        the start of the previous run (at once when that took longer)."""
        ...

    def group_member(self) -> GroupMember | None:
        """This worker's membership as its consumer knows it now; None before the
        consumer exists."""
        ...
