"""Windows of event time and how a windowed table stores them (docs/windows.md).

``Tumbling`` and ``Hopping`` windows are aligned to the epoch: a window starts at a
multiple of its step and lasts its size. One table partition holds, in key order:

- each key's windows, keyed by the key's bytes, 0xff, then the start (u64 big-endian,
  offset by 2^63), so one key's windows are one ordered range scan (0xff never occurs in
  UTF-8, so no key's windows run into another's); in a table of panes (``Panes``), each
  key's pane rows instead: the key, 0xff, the pane's start, then the first window the
  row counts in (both u64 likewise);
- reserved keys, starting with 0xff (a key that no UTF-8 record key starts with): the
  partition's clock (``Clock``: its stream time and which windows it closed and deleted),
  ``0xff 'c'`` + u32 partition; and an index of its windows by start,
  ``0xff 'i'`` + u32 partition + start + key (of panes: + pane start + first window +
  key), so closing and expiry are range scans too. Reserved keys name their partition,
  so the ones of several partitions sharing one store (``memory://``) never meet.

Stored values are tagged: ``r`` + the row's own encoding (``p`` for a pane's, so neither
layout is read as the other), ``c`` + the clock (three i64), ``i`` for an index entry;
the runtime frames each with its positions (pipeline.streaming.positions).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any, Generic, NamedTuple, TypeVar

from pipeline.domain.encoding import EncodingError

Row = TypeVar("Row")

# Below every event time: the clock of a partition that has seen no event yet.
NEVER = -(2**63)
_BIAS = 2**63
_START = struct.Struct(">Q")
_PANE = struct.Struct(">QQ")
_PARTITION = struct.Struct(">I")
_CLOCK = struct.Struct(">qqq")
RESERVED = b"\xff"
_CLOCK_PREFIX = RESERVED + b"c"
_INDEX_PREFIX = RESERVED + b"i"
_SEPARATOR = b"\xff"


class Window(NamedTuple):
    """``[start, end)``, in epoch milliseconds."""

    start: int
    end: int


@dataclass(frozen=True)
class Hopping:
    """Windows of ``size_ms`` starting every ``step_ms``: an event is in size/step of them.
    Each closes when its partition's stream time reaches its end + ``grace_ms``; each is
    deleted when stream time reaches its start + ``retention_ms`` (by default size +
    grace, the least: a window is never deleted before it closed)."""

    size_ms: int
    step_ms: int
    grace_ms: int = 0
    retention_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.step_ms <= self.size_ms:
            raise ValueError(
                f"windows of {self.size_ms} ms every {self.step_ms} ms: the step must be "
                "above 0 and at most the size"
            )
        if self.grace_ms < 0:
            raise ValueError(f"a grace of {self.grace_ms} ms: it must be 0 or more")
        if self.retention_ms is not None and self.retention_ms < self.size_ms + self.grace_ms:
            raise ValueError(
                f"a retention of {self.retention_ms} ms: it must be at least size + grace "
                f"({self.size_ms + self.grace_ms} ms), or windows would be deleted before "
                "they close"
            )

    @property
    def retention(self) -> int:
        return self.size_ms + self.grace_ms if self.retention_ms is None else self.retention_ms

    def starts(self, event_time: int) -> list[int]:
        """The starts of the windows ``event_time`` falls in, oldest first."""
        step = self.step_ms
        first = (event_time - self.size_ms) // step * step + step
        return list(range(first, event_time // step * step + 1, step))

    def window(self, start: int) -> Window:
        return Window(start, start + self.size_ms)

    def pane(self, event_time: int) -> int:
        """The start of the pane (``step_ms`` long) ``event_time`` falls in: the start of
        the newest of its windows."""
        return event_time // self.step_ms * self.step_ms

    def first_window(self, pane: int) -> int:
        """The start of the oldest window holding the pane starting at ``pane``."""
        return pane - self.size_ms + self.step_ms

    def _aligned(self, bound: int) -> int:
        """The first window start at or above ``bound``."""
        return -(-bound // self.step_ms) * self.step_ms

    def closed_below(self, stream_time: int) -> int:
        """At ``stream_time``, every window starting below this has closed."""
        return self._aligned(stream_time - self.size_ms - self.grace_ms + 1)

    def expired_below(self, stream_time: int) -> int:
        """At ``stream_time``, every window starting below this is past its retention."""
        return self._aligned(stream_time - self.retention + 1)


class Tumbling(Hopping):
    """Windows of ``size_ms`` one after the other: an event is in exactly one."""

    def __init__(self, *, size_ms: int, grace_ms: int = 0, retention_ms: int | None = None) -> None:
        super().__init__(size_ms, size_ms, grace_ms, retention_ms)


class Clock(NamedTuple):
    """A partition's clock: its stream time (the largest event time it has seen), and
    the starts below which its windows have closed (their finals emitted) and have been
    deleted."""

    stream_time: int = NEVER
    closed_below: int = NEVER
    expired_below: int = NEVER


class Indexed:
    """The value of an index entry: the window its key names exists."""


INDEXED = Indexed()


def window_key(key: bytes, start: int) -> bytes:
    return key + _SEPARATOR + _START.pack(start + _BIAS)


def key_range(key: bytes) -> tuple[bytes, bytes]:
    """The keys of ``key``'s windows: ``[start, end)`` of a scan."""
    return key + _SEPARATOR, key + _SEPARATOR + b"\xff" * (_START.size + 1)


def window_start(row_key: bytes) -> int:
    """The start of the window a row key names."""
    return int(_START.unpack_from(row_key, len(row_key) - _START.size)[0]) - _BIAS


def pane_key(key: bytes, pane: int, first: int) -> bytes:
    """The row of ``key``'s events in the pane starting at ``pane`` that count in the
    windows starting at ``first`` and after (and at ``pane`` or before)."""
    return key + _SEPARATOR + _PANE.pack(pane + _BIAS, first + _BIAS)


def pane_of(row_key: bytes) -> tuple[int, int]:
    """The pane start and first window a pane row's key names."""
    pane, first = _PANE.unpack_from(row_key, len(row_key) - _PANE.size)
    return int(pane) - _BIAS, int(first) - _BIAS


def clock_key(partition: int) -> bytes:
    return _CLOCK_PREFIX + _PARTITION.pack(partition)


def index_key(partition: int, start: int, key: bytes) -> bytes:
    return _INDEX_PREFIX + _PARTITION.pack(partition) + _START.pack(start + _BIAS) + key


def pane_index_key(partition: int, pane: int, first: int, key: bytes) -> bytes:
    prefix = _INDEX_PREFIX + _PARTITION.pack(partition)
    return prefix + _PANE.pack(pane + _BIAS, first + _BIAS) + key


def pane_indexed(entry: bytes) -> tuple[int, int, bytes]:
    """The pane start, first window and key of the pane row an index entry names."""
    offset = len(_INDEX_PREFIX) + _PARTITION.size
    pane, first = _PANE.unpack_from(entry, offset)
    return int(pane) - _BIAS, int(first) - _BIAS, entry[offset + _PANE.size :]


def index_range(partition: int, start: int, end: int) -> tuple[bytes, bytes]:
    """The index entries of the windows (or panes) starting in ``[start, end)``: a scan's
    bounds."""
    prefix = _INDEX_PREFIX + _PARTITION.pack(partition)
    return prefix + _START.pack(start + _BIAS), prefix + _START.pack(end + _BIAS)


def indexed(entry: bytes) -> tuple[int, bytes]:
    """The start and the key of the window an index entry names."""
    offset = len(_INDEX_PREFIX) + _PARTITION.size
    (biased,) = _START.unpack_from(entry, offset)
    return int(biased) - _BIAS, entry[offset + _START.size :]


@dataclass(frozen=True)
class Panes(Generic[Row]):
    """How a hopping table of an aggregate that combines keeps its rows: one per key and
    pane (``step_ms`` of event time), not one per window; a window's value is its panes'
    rows merged by ``combine``, oldest first.

    An event counts in the row of its pane and of the first of its windows still open
    (``pane_key``): a row (pane, first) counts in the windows starting from ``first`` to
    the pane's start. While the pane's oldest window is open, that is the pane's shared
    row; an event that misses some closed windows goes to a row of its own first open
    window, which no closed window reads, so a closed window's value never changes."""

    windows: Hopping
    combine: Callable[[Row, Row], Row]

    def spans(self, pane: int, first: int, low: int, high: int) -> range:
        """The starts of the windows in ``[low, high)`` the row (pane, first) counts in."""
        step = self.windows.step_ms
        return range(max(first, low), min(pane + step, high), step)

    def values(
        self, rows: Sequence[tuple[int, int, Row]], low: int, high: int
    ) -> list[tuple[int, Row]]:
        """The windows starting in ``[low, high)`` that a key's rows (pane, first, row),
        oldest first, make: (start, value), oldest first."""
        starts = sorted({start for p, f, _ in rows for start in self.spans(p, f, low, high)})
        return [
            (start, reduce(self.combine, [row for p, f, row in rows if f <= start <= p]))
            for start in starts
        ]


@dataclass(frozen=True)
class WindowedRows:
    """The values of a windowed table: its rows (``encode``, ``decode``; pane rows if
    ``paned``), clocks and index entries, each tagged."""

    encode_row: Callable[[Any], bytes]
    decode_row: Callable[[bytes], Any]
    paned: bool = False

    def encode(self, value: Any) -> bytes:
        if isinstance(value, Clock):
            return b"c" + _CLOCK.pack(*value)
        if value is INDEXED:
            return b"i"
        return (b"p" if self.paned else b"r") + self.encode_row(value)

    def decode(self, data: bytes) -> Any:
        tag = data[:1]
        if tag == (b"p" if self.paned else b"r"):
            return self.decode_row(data[1:])
        if tag == b"c":
            return Clock(*_CLOCK.unpack_from(data, 1))
        if tag == b"i":
            return INDEXED
        if tag in (b"p", b"r"):
            raise EncodingError(
                f"windowed table value: a {'window' if self.paned else 'pane'} row in a table "
                f"of {'panes' if self.paned else 'windows'}: the table's combine changed, so "
                'its layout did; rebuild its state (docs/windows.md, "Panes")'
            )
        raise EncodingError(f"windowed table value: unknown tag {tag!r}")
