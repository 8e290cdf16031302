from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.encoding import (
    EncodingError,
    decode_order_line,
    decode_points,
    decode_stock_row,
    decode_user_stats,
    encode_order_line,
    encode_points,
    encode_stock_row,
    encode_user_stats,
)
from pipeline.domain.rules import OrderLine, StockRow, UserOrderStats, UserPoints

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)


@given(int64, int64, st.text())
def test_user_stats_round_trip(count: int, total: int, last: str) -> None:
    stats = UserOrderStats(order_count=count, total_spent_cents=total, last_order_id=last)
    assert decode_user_stats(encode_user_stats(stats)) == stats


@given(int64)
def test_stock_row_round_trip(available: int) -> None:
    assert decode_stock_row(encode_stock_row(StockRow(available))) == StockRow(available)


@given(int64, st.text())
def test_points_round_trip(points: int, last: str) -> None:
    row = UserPoints(points, last)
    assert decode_points(encode_points(row)) == row


@given(st.text(min_size=1), int32, st.text(), int64)
def test_order_line_round_trip(sku: str, quantity: int, order_id: str, at: int) -> None:
    line = OrderLine(sku=sku, quantity=quantity, order_id=order_id, created_at_ms=at)
    assert decode_order_line(sku, encode_order_line(line)) == line


@pytest.mark.parametrize("data", [b"", b"\x02abc", b"{}", b"\x01\x00"])
def test_unknown_bytes_are_rejected(data: bytes) -> None:
    for decode in (decode_stock_row, decode_user_stats, decode_points):
        with pytest.raises(EncodingError):
            decode(data)
    with pytest.raises(EncodingError):
        decode_order_line("A", data)


def test_text_that_is_not_utf8_is_an_encoding_error() -> None:
    with pytest.raises(EncodingError, match="UTF-8"):
        decode_user_stats(encode_user_stats(UserOrderStats(1, 2, "")) + b"\xff")
