from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.encoding import (
    EncodingError,
    decode_order_line,
    decode_stock_row,
    decode_user_stats,
    encode_order_line,
    encode_stock_row,
    encode_user_stats,
)
from pipeline.domain.rules import OrderLine, Position, StockRow, UserOrderStats

int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
int32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
positions = st.dictionaries(
    st.text(min_size=1, max_size=40),
    st.builds(Position, st.integers(min_value=0, max_value=2**62), st.integers(0, 2**31 - 1)),
    max_size=20,
)


@given(int64, int64, st.text(), positions)
def test_user_stats_round_trip(
    count: int, total: int, last: str, applied: dict[str, Position]
) -> None:
    stats = UserOrderStats(
        order_count=count, total_spent_cents=total, last_order_id=last, applied=applied
    )
    assert decode_user_stats(encode_user_stats(stats)) == stats


@given(int64, positions)
def test_stock_row_round_trip(available: int, applied: dict[str, Position]) -> None:
    row = StockRow(available=available, applied=applied)
    assert decode_stock_row(encode_stock_row(row)) == row


@given(st.text(min_size=1), int32, int32, int64, int32, st.text(), int64)
def test_order_line_round_trip(
    sku: str, quantity: int, partition: int, offset: int, index: int, order_id: str, at: int
) -> None:
    line = OrderLine(
        sku=sku,
        quantity=quantity,
        order_id=order_id,
        order_partition=partition,
        order_offset=offset,
        line_index=index,
        created_at_ms=at,
    )
    assert decode_order_line(sku, encode_order_line(line)) == line


@pytest.mark.parametrize("data", [b"", b"\x02abc", b"{}"])
def test_unknown_bytes_are_rejected(data: bytes) -> None:
    with pytest.raises(EncodingError):
        decode_stock_row(data)
    with pytest.raises(EncodingError):
        decode_order_line("A", data)
