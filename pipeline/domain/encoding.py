"""Compact binary encodings for what only the pipeline itself reads: table rows
(in RocksDB and the changelog topics) and order lines on the repartition topic.

Why not JSON or Avro: rows are encoded on every table write and decoded on every
read; a fixed struct layout is several times cheaper and needs no registry. Every
encoding starts with a version byte so a later layout can be read side by side.

Layouts (big-endian):
- position list: u16 count, then per entry: u8 source length, source UTF-8,
  i64 offset, i32 index
- user stats row: u8 version=1, i64 order_count, i64 total_spent_cents,
  position list, then last_order_id UTF-8 to the end
- stock row: u8 version=1, i64 available, position list
- order line: u8 version=1, i32 quantity, i32 order partition, i64 order offset,
  i32 line index, i64 order created_at (ms), then order_id UTF-8 to the end (the
  SKU is the record key)
"""

from __future__ import annotations

import struct

from pipeline.domain.rules import AppliedPositions, OrderLine, Position, StockRow, UserOrderStats

VERSION = 1
_HEAD = struct.Struct(">B")
_COUNT = struct.Struct(">H")
_SOURCE_LEN = struct.Struct(">B")
_POSITION = struct.Struct(">qi")
_STATS = struct.Struct(">Bqq")
_STOCK = struct.Struct(">Bq")
_LINE = struct.Struct(">Biiqiq")


class EncodingError(ValueError):
    """Bytes that are not a known internal encoding."""


def _check_version(data: bytes, what: str) -> None:
    if not data or data[0] != VERSION:
        raise EncodingError(f"{what}: unknown encoding version {data[:1]!r}")


def _encode_positions(applied: AppliedPositions) -> bytes:
    parts = [_COUNT.pack(len(applied))]
    for source, position in applied.items():
        raw = source.encode()
        parts += [_SOURCE_LEN.pack(len(raw)), raw, _POSITION.pack(position.offset, position.index)]
    return b"".join(parts)


def _decode_positions(data: bytes, start: int) -> tuple[dict[str, Position], int]:
    (count,) = _COUNT.unpack_from(data, start)
    cursor = start + _COUNT.size
    applied: dict[str, Position] = {}
    for _ in range(count):
        (length,) = _SOURCE_LEN.unpack_from(data, cursor)
        cursor += _SOURCE_LEN.size
        source = data[cursor : cursor + length].decode()
        cursor += length
        offset, index = _POSITION.unpack_from(data, cursor)
        cursor += _POSITION.size
        applied[source] = Position(offset, index)
    return applied, cursor


def encode_user_stats(stats: UserOrderStats) -> bytes:
    return b"".join(
        [
            _STATS.pack(VERSION, stats.order_count, stats.total_spent_cents),
            _encode_positions(stats.applied),
            stats.last_order_id.encode(),
        ]
    )


def decode_user_stats(data: bytes) -> UserOrderStats:
    _check_version(data, "user stats row")
    _, order_count, total = _STATS.unpack_from(data)
    applied, cursor = _decode_positions(data, _STATS.size)
    return UserOrderStats(
        order_count=order_count,
        total_spent_cents=total,
        last_order_id=data[cursor:].decode(),
        applied=applied,
    )


def encode_stock_row(row: StockRow) -> bytes:
    return _STOCK.pack(VERSION, row.available) + _encode_positions(row.applied)


def decode_stock_row(data: bytes) -> StockRow:
    _check_version(data, "stock row")
    _, available = _STOCK.unpack_from(data)
    applied, _ = _decode_positions(data, _STOCK.size)
    return StockRow(available=available, applied=applied)


def encode_order_line(line: OrderLine) -> bytes:
    head = _LINE.pack(
        VERSION,
        line.quantity,
        line.order_partition,
        line.order_offset,
        line.line_index,
        line.created_at_ms,
    )
    return head + line.order_id.encode()


def decode_order_line(sku: str, data: bytes) -> OrderLine:
    _check_version(data, "order line")
    if len(data) < _LINE.size:
        raise EncodingError(f"order line: {len(data)} bytes is shorter than {_LINE.size}")
    _, quantity, partition, offset, index, created_at_ms = _LINE.unpack_from(data)
    return OrderLine(
        sku=sku,
        quantity=quantity,
        order_id=data[_LINE.size :].decode(),
        order_partition=partition,
        order_offset=offset,
        line_index=index,
        created_at_ms=created_at_ms,
    )
