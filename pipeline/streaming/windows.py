"""How a windowed agent (``WindowedAgent`` of pipeline.streaming.topology) is run
(docs/windows.md).

Per event: its event time advances its partition's stream time; its rule updates each of
its windows still open (with panes, ``Panes`` of pipeline.streaming.windowing: the one row
of its pane and first open window); an event whose windows have all closed is late,
dead-lettered and counted. Per partition, at the end of the batch: the windows that stream
time closed emit their finals (the close hook), and the partition's clock is written last
of the partition's changelog records but for the tombstones of the windows past their
retention, which follow it (``_write_clock``).

A partition of the worker's with no event for a while (``window_idle_close_ms``) has its
stream time advanced by the wall clock (``close_quiet``, a batch of its own between the
agent's batches, once every interval): by the wall time it stayed quiet, the clock written
as an event's would be. Windows close by the stream time the store holds (durable: under
at-least-once stored after its changelog record was acknowledged; under exactly-once after
its transaction committed), so a final a crash has repeated carries the same content: no
event can reach a window the stored clock closed. A quiet partition's windows therefore
close one quiet batch after the one whose advance closes them.

Exact across replays: the clock carries the positions of the events it applied, and a
partition's changelog records arrive in order, so a clock restored with an event's
position comes with every window that event changed; a replayed event is skipped whole.
Each window row carries its positions too, for a batch whose records were only partly
delivered before a crash.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, cast

from pipeline.streaming.agents import YIELD_EVERY, AgentHandler, Outputs, Serdes, Setbacks
from pipeline.streaming.event_time import iso
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.ports import Assignment, Event, MessageHeaders, PartitionStore
from pipeline.streaming.positions import (
    AppliedPositions,
    Origin,
    Position,
    Tracked,
    TrackedCodec,
    advance,
    is_new,
)
from pipeline.streaming.processing import Prepared, RowBatch
from pipeline.streaming.producer import Outgoing
from pipeline.streaming.topology import RuleBug, WindowedAgent
from pipeline.streaming.windowing import (
    INDEXED,
    NEVER,
    Clock,
    Window,
    clock_key,
    index_key,
    index_range,
    indexed,
    key_range,
    pane_index_key,
    pane_indexed,
    pane_key,
    pane_of,
    window_key,
    window_start,
)

# What a final is framed with if it were re-keyed, which Topology.check refuses.
_NO_ORIGIN = Origin("", Position(-1))
_INDEX_ENTRY: Tracked[Any] = Tracked(INDEXED, {})


class LateEvent(ValueError):
    """An event all of whose windows have closed: it counts in none, and is dead-lettered."""


class CloseFailed(RuleBug):
    """A window's close hook raised, or emitted what its topic's schema refuses: a final
    would be lost, so the worker stops."""


@dataclass
class Partition:
    """A partition's clock as a batch advances it, and the batch's last event of it (the
    changelog partition its records go to)."""

    clock: Clock
    applied: AppliedPositions
    event: Event
    changed: bool = False


@dataclass(frozen=True)
class PartitionMark:
    """No record: the partition a quiet batch writes a clock and closes windows in (the
    ``Message`` its rows are written for)."""

    partition: int
    topic: str = ""
    offset: int = -1
    timestamp: float = 0.0
    key: bytes | None = None
    value: bytes | None = None
    headers: MessageHeaders = None


@dataclass(frozen=True)
class QuietMark:
    """The ``Event`` a quiet batch writes a partition's rows for."""

    message: PartitionMark


@dataclass
class Quietness:
    """By the wall clock (seconds): when each partition last had an event, and since when
    its stream time has not been advanced."""

    last_event: dict[int, float] = field(default_factory=dict)
    advanced_at: dict[int, float] = field(default_factory=dict)
    generation: int | None = None

    def heard(self, partition: int, now: float) -> None:
        self.last_event[partition] = self.advanced_at[partition] = now

    def follow(self, assignment: Assignment) -> None:
        """Forget the partitions no longer held, and after a rebalance (a generation
        other than the previous quiet batch's) every one: a partition assigned again (it
        may have had events elsewhere meanwhile) counts from now."""
        held = assignment.partitions
        if assignment.generation != self.generation:
            if self.generation is not None:
                held = frozenset()
            self.generation = assignment.generation
        for partition in [partition for partition in self.last_event if partition not in held]:
            del self.last_event[partition], self.advanced_at[partition]


class WindowedHandler(AgentHandler):
    """The batch handler of one windowed agent (``BatchHandler`` of
    pipeline.streaming.processing)."""

    agent: WindowedAgent[Any]

    def __init__(
        self,
        agent: WindowedAgent[Any],
        store: PartitionStore,
        serdes: Serdes,
        outputs: Outputs,
        metrics: Metrics,
    ) -> None:
        super().__init__(agent, store, serdes, outputs, metrics)
        self.window_store = store
        # Seconds since the epoch; the test harness sets its own.
        self.wall_clock: Callable[[], float] = time.time
        self.quiet_after_s = serdes.topology.settings.window_idle_close_ms / 1000
        self.quietness = Quietness()
        table = agent.row_table.name
        self.late = metrics.late_events
        self.misses = metrics.late_window_misses
        self.closed = metrics.windows_closed.labels(table)
        self.expired = metrics.windows_expired.labels(table)

    async def __call__(self, events: Sequence[Event], in_flight: Prepared | None) -> Prepared:
        assert self.codec is not None
        agent = self.agent
        windows, event_time = agent.windows, agent.event_time
        table = agent.row_table.name
        rows = self._rows(self.window_store, self.codec, in_flight)
        partitions: dict[int, Partition] = {}
        setbacks = Setbacks()
        decoded = self._decoded(events, True, setbacks)
        for index, (event, (key, value, origin)) in enumerate(decoded, 1):
            if not index % YIELD_EVERY:
                await asyncio.sleep(0)
            message = event.message
            partition = partitions.get(message.partition)
            if partition is None:
                partition = partitions[message.partition] = self._partition(rows, event)
            if not is_new(partition.applied, origin):
                self.replays.inc()
                continue
            clock = partition.clock
            try:
                at = event_time.of(value, message)
                stream_time = max(clock.stream_time, at)
                closed_below = max(clock.closed_below, windows.closed_below(stream_time))
                updates, missed = self._updates(rows, event, key, value, origin, at, closed_below)
                if missed is None:
                    self.late.labels(table, message.topic).inc()
                    raise LateEvent(self._lateness(key, at, windows.pane(at), stream_time))
            except Exception as error:  # the event's or its rule's, for this event alone
                setbacks.failed.append((event, error))
                continue
            if missed:
                self.misses.labels(table, message.topic).inc(missed)
            for entry, row_key, tracked, row in updates:
                if tracked is None:
                    rows.put(entry, _INDEX_ENTRY, event)
                applied = tracked.applied if tracked is not None else {}
                rows.put(row_key, Tracked(row, advance(applied, origin)), event)
            partition.clock = clock._replace(stream_time=stream_time)
            partition.applied = advance(partition.applied, origin)
            partition.event = event
            partition.changed = True
        derived: list[Outgoing] = []
        now = self.wall_clock()
        for number, partition in partitions.items():
            self.quietness.heard(number, now)
            derived += self._close(rows, number, partition)
            expired = self._expire(rows, number, partition)
            self._write_clock(rows, number, partition, expired, partition.changed)
        return setbacks.onto(await rows.send(derived))

    async def close_quiet(self, assignment: Assignment, in_flight: Prepared | None) -> Prepared:
        """The quiet batch (``Quiet`` of pipeline.streaming.processing) for the assigned
        partitions: each that had no event for ``window_idle_close_ms`` closes the windows
        its stored stream time closed, then has its stream time advanced by the wall time
        since it was last advanced (see the module's docstring)."""
        assert self.codec is not None
        quietness = self.quietness
        quietness.follow(assignment)
        rows = self._rows(self.window_store, self.codec, in_flight)
        now = self.wall_clock()
        derived: list[Outgoing] = []
        for number in sorted(assignment.partitions):
            last_event = quietness.last_event.setdefault(number, now)
            advanced_at = quietness.advanced_at.setdefault(number, now)
            if now - last_event < self.quiet_after_s:
                continue
            mark = QuietMark(PartitionMark(number))
            partition = self._partition(rows, mark)
            stream_time = partition.clock.stream_time
            if stream_time == NEVER:
                continue  # no event yet: nothing to close, no time to advance from
            stored = self.window_store.read(number, clock_key(number))
            durable = self.codec.decode(stored).row.stream_time if stored is not None else NEVER
            partition.clock = partition.clock._replace(stream_time=durable)
            derived += self._close(rows, number, partition)
            expired = self._expire(rows, number, partition)
            advance_ms = int((now - advanced_at) * 1000)
            partition.clock = partition.clock._replace(stream_time=stream_time + advance_ms)
            quietness.advanced_at[number] = now
            changed = advance_ms > 0 or partition.changed
            self._write_clock(rows, number, partition, expired, changed)
        return await rows.send(derived)

    def _updates(
        self,
        rows: RowBatch[Tracked[Any]],
        event: Event,
        key: str,
        value: Any,
        origin: Origin,
        at: int,
        closed_below: int,
    ) -> tuple[list[tuple[bytes, bytes, Tracked[Any] | None, Any]], int | None]:
        """The rows a new event at ``at`` changes, in the windows starting at
        ``closed_below`` or after (those below have closed): (index entry, row key, the
        row before, the row after) for each, with how many of its windows it missed; None
        for the event that missed them all. Without panes, a row per open window; with
        panes, the one of its pane and first open window (``Panes``)."""
        windows, panes = self.agent.windows, self.agent.panes
        rule = self.agent.rules[event.message.topic]
        partition, raw_key = event.message.partition, cast(bytes, event.message.key)
        updates = []
        if panes is not None:
            pane = windows.pane(at)
            first = windows.first_window(pane)
            open_from = max(first, closed_below)
            if open_from > pane:
                return [], None
            row_key = pane_key(raw_key, pane, open_from)
            tracked = rows.get(row_key, event)
            if tracked is None or is_new(tracked.applied, origin):  # else a partial replay
                pane_window = Window(pane, pane + windows.step_ms)
                row = rule(key, value, pane_window, tracked.row if tracked is not None else None)
                entry = pane_index_key(partition, pane, open_from, raw_key)
                updates.append((entry, row_key, tracked, row))
            return updates, (open_from - first) // windows.step_ms
        starts = windows.starts(at)
        open_starts = [start for start in starts if start >= closed_below]
        if not open_starts:
            return [], None
        for start in open_starts:
            row_key = window_key(raw_key, start)
            tracked = rows.get(row_key, event)
            if tracked is not None and not is_new(tracked.applied, origin):
                continue  # a replay of a batch partly delivered
            row = rule(key, value, windows.window(start), tracked.row if tracked else None)
            updates.append((index_key(partition, start, raw_key), row_key, tracked, row))
        return updates, len(starts) - len(open_starts)

    def _partition(self, rows: RowBatch[Tracked[Any]], event: Event) -> Partition:
        stored = rows.get(clock_key(event.message.partition), event)
        if stored is None:
            return Partition(Clock(), {}, event)
        return Partition(stored.row, stored.applied, event)

    def _lateness(self, key: str, at: int, last_start: int, stream_time: int) -> str:
        windows = self.agent.windows
        end = last_start + windows.size_ms
        closed_at = end + windows.grace_ms
        return (
            f"late for every window of key {key!r}: event time {iso(at)} is "
            f"{stream_time - at} ms behind the partition's stream time {iso(stream_time)}; its "
            f"last window [{iso(last_start)}, {iso(end)}) closed at stream time "
            f"{iso(closed_at)} (its end + a grace of {windows.grace_ms} ms), "
            f"{stream_time - closed_at} ms before"
        )

    def _close(
        self, rows: RowBatch[Tracked[Any]], number: int, partition: Partition
    ) -> list[Outgoing]:
        """The finals of the windows the partition's stream time closed, oldest first."""
        windows, hook = self.agent.windows, self.agent.close_hook
        clock = partition.clock
        bound = max(clock.closed_below, windows.closed_below(clock.stream_time))
        if clock.stream_time == NEVER or bound <= clock.closed_below:
            return []
        finals: list[Outgoing] = []
        closing = self._closing(rows, partition.event, clock.closed_below, bound)
        self.closed.inc(len(closing))
        for start, raw_key, row in closing:
            if hook is None:
                break
            window = windows.window(start)
            key = raw_key.decode()
            try:
                emitted = hook(key, window, row)
                self._check_declared(emitted)
                finals += self.serdes.encode(emitted, _NO_ORIGIN, window.end - 1)
            except RuleBug:
                raise
            except Exception as error:
                raise CloseFailed(
                    f"windowed agent {self.agent.name!r} could not close window "
                    f"[{iso(window.start)}, {iso(window.end)}) of key {key!r}: {error!r}"
                ) from error
        partition.clock = clock._replace(closed_below=bound)
        partition.changed = True
        return finals

    def _closing(
        self, rows: RowBatch[Tracked[Any]], event: Event, low: int, high: int
    ) -> list[tuple[int, bytes, Any]]:
        """The windows of ``event``'s partition starting in ``[low, high)``: (start, key,
        final row), by start and key. In a table of panes without a close hook, the rows
        are not read (None)."""
        number = event.message.partition
        panes = self.agent.panes
        if panes is None:
            closing = []
            for entry in rows.keys(number, *index_range(number, low, high)):
                start, raw_key = indexed(entry)
                tracked = rows.get(window_key(raw_key, start), event)
                if tracked is not None:
                    closing.append((start, raw_key, tracked.row))
            return closing
        entries = self._pane_entries(rows, number, low, high)
        if self.agent.close_hook is None:
            made = self._pane_windows(entries, low, high)
            return [(start, raw_key, None) for start, raw_key in sorted(made)]
        by_key: dict[bytes, list[tuple[int, int, Any]]] = {}  # each in pane order
        for pane, first, raw_key in entries:
            tracked = rows.get(pane_key(raw_key, pane, first), event)
            if tracked is not None:
                by_key.setdefault(raw_key, []).append((pane, first, tracked.row))
        finals = [
            (start, raw_key, row)
            for raw_key, read in by_key.items()
            for start, row in panes.values(read, low, high)
        ]
        return sorted(finals, key=lambda final: final[:2])

    def _pane_entries(
        self, rows: RowBatch[Tracked[Any]], number: int, low: int, high: int
    ) -> list[tuple[int, int, bytes]]:
        """The pane rows (pane, first window, key) of the windows starting in ``[low,
        high)``, as the index names them: panes up to a window's size past ``high``."""
        windows = self.agent.windows
        beyond = high + windows.size_ms - windows.step_ms
        return [
            pane_indexed(entry) for entry in rows.keys(number, *index_range(number, low, beyond))
        ]

    def _pane_windows(
        self, entries: Iterable[tuple[int, int, bytes]], low: int, high: int
    ) -> set[tuple[int, bytes]]:
        """The windows (start, key) starting in ``[low, high)`` that pane rows make."""
        panes = self.agent.panes
        assert panes is not None
        return {
            (start, raw_key)
            for pane, first, raw_key in entries
            for start in panes.spans(pane, first, low, high)
        }

    def _expire(
        self, rows: RowBatch[Tracked[Any]], number: int, partition: Partition
    ) -> list[bytes]:
        """The keys to delete of the windows past their retention, restored ones included:
        every index entry below the bound, not only those this worker wrote. Of panes:
        those whose last window (the one starting with the pane) is past it; the windows
        expired are counted as their panes make them."""
        windows, panes = self.agent.windows, self.agent.panes
        clock = partition.clock
        bound = max(clock.expired_below, windows.expired_below(clock.stream_time))
        if clock.stream_time == NEVER or bound <= clock.expired_below:
            return []
        expired = []
        # Each row before its index entry: a crash between their tombstones leaves an entry
        # without a row, which the next expiry deletes, never a row unindexed.
        if panes is None:
            for entry in rows.keys(number, *index_range(number, NEVER, bound)):
                start, raw_key = indexed(entry)
                expired += [window_key(raw_key, start), entry]
                self.expired.inc()
        else:
            entries = self._pane_entries(rows, number, NEVER, bound)
            for pane, first, raw_key in entries:
                if pane < bound:
                    expired += [
                        pane_key(raw_key, pane, first),
                        pane_index_key(number, pane, first, raw_key),
                    ]
            self.expired.inc(len(self._pane_windows(entries, clock.expired_below, bound)))
        partition.clock = clock._replace(expired_below=bound)
        partition.changed = True
        return expired

    def _write_clock(
        self,
        rows: RowBatch[Tracked[Any]],
        number: int,
        partition: Partition,
        expired: list[bytes],
        changed: bool,
    ) -> None:
        """Write the partition's clock, if ``changed``, after the batch's rows (see the
        module's docstring), then the tombstones of the ``expired`` rows. Not before: a
        window closed and expired in one batch (stream time leapt past its retention) would
        otherwise, after a crash that kept its tombstones but lost the clock, be closed
        again without the rows they deleted (a pane's, or its own updated in the batch),
        a final of other content. Behind the clock, a tombstone lost leaves a row below the
        clock's expiry, which no window and no view reads, and which the next expiry
        deletes: it scans from the oldest entry."""
        if changed:
            clock = Tracked(partition.clock, partition.applied)
            rows.put(clock_key(number), clock, partition.event)
        for key in expired:
            rows.delete(key, partition.event)


class StoredWindow(NamedTuple):
    """One of a key's windows as its store holds it; ``final`` once it closed."""

    window: Window
    row: Any
    final: bool


class StoreCopy(Protocol):
    """What reading a key's windows needs of a copy of a partition: a store, or the one a
    view reads (pipeline.web.views.ServedTable)."""

    def read(self, partition: int, key: bytes) -> bytes | None: ...

    def scan(self, partition: int, start: bytes, end: bytes) -> Iterable[tuple[bytes, bytes]]: ...


def stored_windows(
    agent: WindowedAgent[Any], store: StoreCopy, partition: int, key: bytes
) -> list[StoredWindow]:
    """``key``'s windows in ``partition`` of ``agent``'s store, oldest first, each final
    once its partition's clock closed it."""
    assert agent.table is not None
    codec = TrackedCodec(agent.table.encode, agent.table.decode)
    stored_clock = store.read(partition, clock_key(partition))
    clock = codec.decode(stored_clock).row if stored_clock is not None else Clock()
    windows = agent.windows
    closed_below = max(clock.closed_below, windows.closed_below(clock.stream_time))
    if agent.panes is not None:
        rows = [
            (*pane_of(row_key), codec.decode(value).row)
            for row_key, value in store.scan(partition, *key_range(key))
        ]
        if not rows:
            return []
        made = agent.panes.values(rows, clock.expired_below, rows[-1][0] + 1)
        return [StoredWindow(windows.window(s), row, s < closed_below) for s, row in made]
    found = []
    for row_key, value in store.scan(partition, *key_range(key)):
        start = window_start(row_key)
        if start >= clock.expired_below:  # below: a row whose tombstone is still to come
            row = codec.decode(value).row
            found.append(StoredWindow(windows.window(start), row, start < closed_below))
    return found
