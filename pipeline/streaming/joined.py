"""The row of a stream-table join (pipeline.streaming.joins): the table's row for a key, or,
while the key has none, the stream records held for it, each as it was consumed (its
bytes, to be decoded when released and dead-lettered unchanged if it expires).

Layout (big-endian): u8 version=1, u8 has_row, [u32 length, the row's own encoding],
u16 held count, then per held record: u16 topic length, topic UTF-8, i32 partition,
i64 offset, f64 timestamp (s), i64 event time (ms), key and value each as i32 length
(-1: none) and bytes, u16 header count, per header u16 name length, name UTF-8,
u32 value length, value.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pipeline.domain.encoding import EncodingError
from pipeline.streaming.dead_letters import header_pairs
from pipeline.streaming.ports import Message

VERSION = 1
Row = TypeVar("Row")

_HEAD = struct.Struct(">BB")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_PLACE = struct.Struct(">iqdq")


@dataclass(frozen=True, slots=True)
class Held:
    """A stream record waiting for its key's row: the consumed message (a ``Message``)
    and its event time."""

    topic: str
    partition: int
    offset: int
    timestamp: float
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    event_time_ms: int

    @classmethod
    def of(cls, message: Message, event_time_ms: int) -> Held:
        return cls(
            message.topic,
            message.partition,
            message.offset,
            message.timestamp,
            message.key,
            message.value,
            tuple(header_pairs(message.headers)),
            event_time_ms,
        )


@dataclass(frozen=True, slots=True)
class Joined(Generic[Row]):
    """A key's side of a join: its table row (None until the table has one) and the
    stream records held until it has (empty once it has)."""

    row: Row | None
    held: tuple[Held, ...] = ()


class JoinedCodec(Generic[Row]):
    """``Joined`` rows as bytes, the table row by its own encoding."""

    def __init__(self, encode: Callable[[Row], bytes], decode: Callable[[bytes], Row]) -> None:
        self.encode_row = encode
        self.decode_row = decode

    def encode(self, joined: Joined[Row]) -> bytes:
        parts = [_HEAD.pack(VERSION, joined.row is not None)]
        if joined.row is not None:
            row = self.encode_row(joined.row)
            parts += [_U32.pack(len(row)), row]
        parts.append(_U16.pack(len(joined.held)))
        for held in joined.held:
            parts += [
                _text(held.topic),
                _PLACE.pack(held.partition, held.offset, held.timestamp, held.event_time_ms),
            ]
            parts += [_optional(held.key), _optional(held.value), _U16.pack(len(held.headers))]
            for name, value in held.headers:
                parts += [_text(name), _U32.pack(len(value)), value]
        return b"".join(parts)

    def decode(self, data: bytes) -> Joined[Row]:
        try:
            return self._decode(memoryview(data))
        except (struct.error, UnicodeDecodeError, IndexError) as error:
            raise EncodingError(f"join row: {error}") from None

    def _decode(self, data: memoryview) -> Joined[Row]:
        if len(data) < _HEAD.size:
            raise EncodingError(f"join row: {len(data)} bytes is shorter than {_HEAD.size}")
        version, has_row = _HEAD.unpack_from(data)
        if version != VERSION:
            raise EncodingError(f"join row: unknown encoding version {version}")
        at = _HEAD.size
        row = None
        if has_row:
            (length,) = _U32.unpack_from(data, at)
            at += _U32.size
            encoded, at = _take(data, at, length)
            row = self.decode_row(encoded)
        (count,) = _U16.unpack_from(data, at)
        at += _U16.size
        held = []
        for _ in range(count):
            topic, at = _read_text(data, at)
            partition, offset, timestamp, event_time = _PLACE.unpack_from(data, at)
            at += _PLACE.size
            key, at = _read_optional(data, at)
            value, at = _read_optional(data, at)
            (header_count,) = _U16.unpack_from(data, at)
            at += _U16.size
            headers = []
            for _ in range(header_count):
                name, at = _read_text(data, at)
                (length,) = _U32.unpack_from(data, at)
                at += _U32.size
                value_bytes, at = _take(data, at, length)
                headers.append((name, value_bytes))
            held.append(
                Held(topic, partition, offset, timestamp, key, value, tuple(headers), event_time)
            )
        if at != len(data):
            raise EncodingError(f"join row: {len(data) - at} bytes left over")
        return Joined(row, tuple(held))


def _text(text: str) -> bytes:
    data = text.encode()
    return _U16.pack(len(data)) + data


def _read_text(data: memoryview, at: int) -> tuple[str, int]:
    (length,) = _U16.unpack_from(data, at)
    at += _U16.size
    text, at = _take(data, at, length)
    return text.decode(), at


def _optional(data: bytes | None) -> bytes:
    if data is None:
        return _I32.pack(-1)
    return _I32.pack(len(data)) + data


def _read_optional(data: memoryview, at: int) -> tuple[bytes | None, int]:
    (length,) = _I32.unpack_from(data, at)
    at += _I32.size
    if length < 0:
        return None, at
    return _take(data, at, length)


def _take(data: memoryview, at: int, length: int) -> tuple[bytes, int]:
    if at + length > len(data):
        raise EncodingError(f"join row: truncated at byte {at} ({length} more expected)")
    return bytes(data[at : at + length]), at + length
