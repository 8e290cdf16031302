"""Co-partitioned topics read in step: which partitions a fetch leaves out so that a join's
topics are read in timestamp order across them, partition by partition (what Kafka Streams
does within a task, choosing the partition of the earliest record; docs/guarantees.md,
"Joins").

Without it a worker catching up on a backlog reads one topic ahead of the other, and a
join holds (then refuses) the stream records of keys whose table rows are still unread.
A partition waits while a partition of the same number of a topic it is read in step with
was read to an earlier time and still has records to read. Where a partition with records
to read has no stream time yet (at an assignment), a fetch first takes one record of it:
its timestamp says where the partition stands. Neither lasts longer than ``max_wait_s``
without the partition waited for delivering anything (a stuck peer does not stop a topic).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Set
from typing import TypeVar

# A topic and a partition number.
TopicPartition = tuple[str, int]
# A partition as the engine names it.
Partition = TypeVar("Partition", bound=TopicPartition)


class ReadInStep:
    """The stream time (latest record timestamp delivered) of each partition of topics
    read in step, and what the next fetch asks for."""

    def __init__(
        self,
        groups: Iterable[Iterable[str]],
        max_wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        peers: dict[str, set[str]] = {}
        for group in groups:
            topics = set(group)
            for topic in topics:
                peers.setdefault(topic, set()).update(topics - {topic})
        self._peers = {topic: frozenset(others) for topic, others in peers.items() if others}
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._stream_time: dict[TopicPartition, int] = {}
        # Since when each partition waits for its peers, or is probed for its stream time.
        self._waiting_since: dict[TopicPartition, float] = {}
        self._probed_since: dict[TopicPartition, float] = {}

    @property
    def active(self) -> bool:
        """Whether any topic is read in step with another."""
        return bool(self._peers) and self._max_wait_s > 0

    def reads_in_step(self, topic: str) -> bool:
        return topic in self._peers

    def delivered(self, tp: TopicPartition, timestamp_ms: int) -> None:
        """A fetch delivered records of ``tp`` up to ``timestamp_ms`` (its latest): the
        partitions waiting for it wait afresh."""
        topic, partition = tp
        if timestamp_ms > self._stream_time.get(tp, -1):
            self._stream_time[tp] = timestamp_ms
        self._probed_since.pop(tp, None)
        for peer in self._peers.get(topic, ()):
            self._waiting_since.pop((peer, partition), None)

    def restart(self) -> None:
        """Forget every stream time: the consumer's partitions were assigned anew, each
        read from its committed offset."""
        self._stream_time.clear()
        self._waiting_since.clear()
        self._probed_since.clear()

    def next_fetch(
        self,
        requested: Set[Partition],
        behind: Callable[[Partition], bool],
        max_records: int | None,
        paused: Set[Partition] = frozenset(),
    ) -> tuple[set[Partition], int | None]:
        """What a fetch of ``requested`` asks for, and at most how many records (None: as
        many as the consumer hands out; ``behind`` says whether a partition has records
        still to read): one record of the partitions with no stream time yet, or else
        ``requested`` but the partitions waiting for a peer (same partition number, a
        topic read in step with their own) that is requested too, or ``paused`` while its
        agents' queues drain, was read to an earlier time and has records to read. Never
        nothing: the partition read to the earliest time does not wait."""
        now = self._clock()
        probed = {
            tp
            for tp in requested
            if tp[0] in self._peers
            and tp not in self._stream_time
            and behind(tp)
            and now - self._probed_since.setdefault(tp, now) < self._max_wait_s
        }
        if probed:
            return probed, 1
        by_name: dict[TopicPartition, Partition] = {
            (tp[0], tp[1]): tp for tp in (*requested, *paused)
        }
        waiting: set[Partition] = set()
        for tp in requested:
            topic, partition = tp
            peers = self._peers.get(topic)
            own_time = self._stream_time.get(tp)
            if peers is None or own_time is None:
                continue
            requested_peers = (by_name.get((peer, partition)) for peer in peers)
            if not any(
                peer is not None and self._stream_time.get(peer, -1) < own_time and behind(peer)
                for peer in requested_peers
            ):
                self._waiting_since.pop(tp, None)
                continue
            if now - self._waiting_since.setdefault(tp, now) < self._max_wait_s:
                waiting.add(tp)
        return set(requested) - waiting, max_records
