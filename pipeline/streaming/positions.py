"""Source positions: how a table row tells a replayed event from a new one.

Each row remembers, per source partition (``"<topic>:<partition>"``), the position
of the last event it applied; an event at or before that position is a replay
(at-least-once delivery after a crash or rebalance) and changes nothing. That is
what makes table updates exact without Kafka transactions. The runtime keeps the
positions beside the row (``Tracked``), so a rule never sees them.

An event re-keyed through an internal topic keeps the position of the event that
emitted it (``Origin``, framed in front of the value), with an index among that
event's re-keyed events: a replayed order re-sends its lines, and the stock rows
recognise each line by the order's position, not by the line's new offset.

Layouts (big-endian):
- position list: u16 count, then per entry: u8 source length, source UTF-8,
  i64 offset, i32 index
- tracked row: u8 version=2, position list, then the row's own encoding to the end
- origin frame: u8 version=2, u8 source length, source UTF-8, i64 offset, i32 index,
  then the value's own encoding to the end

Version 1 was the layout before the runtime kept positions apart from the rows (each row
type held its own positions); such bytes are refused with a message saying so.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, NamedTuple, TypeVar

from pipeline.domain.encoding import EncodingError

VERSION = 2
OLDER_LAYOUT = 1
_COUNT = struct.Struct(">H")
_SOURCE_LEN = struct.Struct(">B")
_POSITION = struct.Struct(">qi")

Row = TypeVar("Row")


# Tuples, not dataclasses: one or more are made for every event, and a tuple is several
# times cheaper to build; its ordering is (offset, index), as replays need.
class Position(NamedTuple):
    """Where in a source partition an event stands: its offset, and which of the
    several events one source event re-keys it is (the nth line of one order)."""

    offset: int
    nth: int = 0


# Keyed by source, e.g. ``"order_created:3"``.
AppliedPositions = Mapping[str, Position]


def source_id(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class Origin(NamedTuple):
    """The source event a table change comes from."""

    source: str
    position: Position


def is_new(applied: AppliedPositions, origin: Origin) -> bool:
    """True unless the row already applied this event (or a later one of the same source)."""
    last = applied.get(origin.source)
    return last is None or origin.position > last


def advance(applied: AppliedPositions, origin: Origin) -> dict[str, Position]:
    return {**applied, origin.source: origin.position}


class Tracked(NamedTuple, Generic[Row]):
    """A table row and the positions of the events it applied."""

    row: Row
    applied: AppliedPositions


def _check_version(data: bytes, what: str) -> None:
    if data[:1] == bytes((OLDER_LAYOUT,)):
        raise EncodingError(
            f"{what}: written by an earlier version of the pipeline (layout 1): rebuild the "
            "table state (new PIPELINE_APP_ID, or empty data dirs and changelog topics)"
        )
    if not data or data[0] != VERSION:
        raise EncodingError(f"{what}: unknown encoding version {data[:1]!r}")


# Sources are a worker's source partitions, a few hundred at most; every row read or
# written names several, so their names and frames are made once (bounded all the same).
@lru_cache(maxsize=4096)
def _encode_source(source: str) -> bytes:
    raw = source.encode()
    return _SOURCE_LEN.pack(len(raw)) + raw


@lru_cache(maxsize=4096)
def _source_name(raw: bytes) -> str:
    return raw.decode()


def _decode_source(data: bytes, cursor: int) -> tuple[str, int]:
    (length,) = _SOURCE_LEN.unpack_from(data, cursor)
    cursor += _SOURCE_LEN.size
    return _source_name(data[cursor : cursor + length]), cursor + length


def encode_positions(applied: AppliedPositions) -> bytes:
    pack = _POSITION.pack
    parts = [_COUNT.pack(len(applied))]
    for source, position in applied.items():
        parts.append(_encode_source(source))
        parts.append(pack(*position))
    return b"".join(parts)


# Every row read decodes its positions: this loop is on the hot path (a stock row names
# up to one source per order partition), hence the local names and no struct call per
# length byte.
def decode_positions(data: bytes, start: int) -> tuple[dict[str, Position], int]:
    (count,) = _COUNT.unpack_from(data, start)
    cursor = start + _COUNT.size
    applied: dict[str, Position] = {}
    unpack = _POSITION.unpack_from
    name = _source_name
    # A Position from the unpacked tuple without NamedTuple's Python-level __new__.
    position = tuple.__new__
    for _ in range(count):
        end = cursor + 1 + data[cursor]
        applied[name(data[cursor + 1 : end])] = position(Position, unpack(data, end))
        cursor = end + _POSITION.size
    return applied, cursor


@dataclass(frozen=True)
class TrackedCodec(Generic[Row]):
    """Stored bytes of a tracked row: its positions, then the row's own encoding."""

    encode_row: Callable[[Row], bytes]
    decode_row: Callable[[bytes], Row]

    def encode(self, tracked: Tracked[Row]) -> bytes:
        return b"".join(
            [bytes((VERSION,)), encode_positions(tracked.applied), self.encode_row(tracked.row)]
        )

    def decode(self, data: bytes) -> Tracked[Row]:
        _check_version(data, "tracked row")
        applied, cursor = decode_positions(data, 1)
        return Tracked(self.decode_row(data[cursor:]), applied)


def origin_header(source: str) -> bytes:
    """The start of the origin frame of every event re-keyed from ``source``."""
    return bytes((VERSION,)) + _encode_source(source)


def frame_origin(header: bytes, offset: int, index: int, payload: bytes) -> bytes:
    """``payload`` framed with its origin: ``header`` (``origin_header``), then the
    origin's offset and the index among its re-keyed events."""
    return b"".join([header, _POSITION.pack(offset, index), payload])


def unframe_origin(data: bytes) -> tuple[Origin, bytes]:
    """The origin in front of a re-keyed value, and the value's own bytes."""
    _check_version(data, "re-keyed event")
    try:
        source, cursor = _decode_source(data, 1)
        offset, index = _POSITION.unpack_from(data, cursor)
    except (struct.error, UnicodeDecodeError) as error:
        raise EncodingError(f"re-keyed event: no origin in front of the value ({error})") from None
    return Origin(source, Position(offset, index)), data[cursor + _POSITION.size :]
