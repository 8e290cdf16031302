"""Compact binary encodings for what only the pipeline itself reads: table rows
(in RocksDB and the changelog topics) and order lines on the repartition topic.

Why not JSON or Avro: rows are encoded on every table write and decoded on every
read; a fixed struct layout is several times cheaper and needs no registry. Every
encoding starts with a version byte so a later layout can be read side by side.
(The runtime frames them further: the positions a row applied, the origin of a
re-keyed event; see pipeline.streaming.positions.)

Layouts (big-endian):
- user stats row: u8 version=1, i64 order_count, i64 total_spent_cents, then
  last_order_id UTF-8 to the end
- stock row: u8 version=1, i64 available
- points row: u8 version=1, i64 points, then last_order_id UTF-8 to the end
- user address row: u8 version=1, then the email UTF-8 to the end
- order line: u8 version=1, i32 quantity, i64 order created_at (ms), then order_id
  UTF-8 to the end (the SKU is the record key)
"""

from __future__ import annotations

import struct

from pipeline.domain.rules import OrderLine, StockRow, UserAddress, UserOrderStats, UserPoints

VERSION = 1
_STATS = struct.Struct(">Bqq")
_STOCK = struct.Struct(">Bq")
_POINTS = struct.Struct(">Bq")
_LINE = struct.Struct(">Biq")
_ADDRESS = struct.Struct(">B")


class EncodingError(ValueError):
    """Bytes that are not a known internal encoding."""


def _check(data: bytes, layout: struct.Struct, what: str) -> None:
    if not data or data[0] != VERSION:
        raise EncodingError(f"{what}: unknown encoding version {data[:1]!r}")
    if len(data) < layout.size:
        raise EncodingError(f"{what}: {len(data)} bytes is shorter than {layout.size}")


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as error:
        raise EncodingError(f"{what}: text is not UTF-8 ({error})") from None


def encode_user_stats(stats: UserOrderStats) -> bytes:
    head = _STATS.pack(VERSION, stats.order_count, stats.total_spent_cents)
    return head + stats.last_order_id.encode()


def decode_user_stats(data: bytes) -> UserOrderStats:
    _check(data, _STATS, "user stats row")
    _, order_count, total = _STATS.unpack_from(data)
    return UserOrderStats(order_count, total, _text(data[_STATS.size :], "user stats row"))


def encode_stock_row(row: StockRow) -> bytes:
    return _STOCK.pack(VERSION, row.available)


def decode_stock_row(data: bytes) -> StockRow:
    _check(data, _STOCK, "stock row")
    _, available = _STOCK.unpack_from(data)
    return StockRow(available)


def encode_points(points: UserPoints) -> bytes:
    return _POINTS.pack(VERSION, points.points) + points.last_order_id.encode()


def decode_points(data: bytes) -> UserPoints:
    _check(data, _POINTS, "points row")
    _, points = _POINTS.unpack_from(data)
    return UserPoints(points, _text(data[_POINTS.size :], "points row"))


def encode_address(address: UserAddress) -> bytes:
    return _ADDRESS.pack(VERSION) + address.email.encode()


def decode_address(data: bytes) -> UserAddress:
    _check(data, _ADDRESS, "user address row")
    return UserAddress(_text(data[_ADDRESS.size :], "user address row"))


def encode_order_line(line: OrderLine) -> bytes:
    return _LINE.pack(VERSION, line.quantity, line.created_at_ms) + line.order_id.encode()


def decode_order_line(sku: str, data: bytes) -> OrderLine:
    _check(data, _LINE, "order line")
    _, quantity, created_at_ms = _LINE.unpack_from(data)
    return OrderLine(sku, quantity, _text(data[_LINE.size :], "order line"), created_at_ms)
