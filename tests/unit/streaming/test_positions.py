from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.domain.encoding import EncodingError, decode_stock_row, encode_stock_row
from pipeline.domain.rules import StockRow
from pipeline.streaming.positions import (
    Origin,
    Position,
    Tracked,
    TrackedCodec,
    advance,
    frame_origin,
    is_new,
    origin_header,
    source_id,
    unframe_origin,
)

P0 = source_id("order_created", 0)
positions = st.dictionaries(
    st.text(min_size=1, max_size=40),
    st.builds(Position, st.integers(min_value=0, max_value=2**62), st.integers(0, 2**31 - 1)),
    max_size=20,
)


def test_an_event_at_or_before_the_last_applied_position_is_a_replay() -> None:
    applied = advance({}, Origin(P0, Position(5)))
    assert not is_new(applied, Origin(P0, Position(5)))
    assert not is_new(applied, Origin(P0, Position(4)))
    assert is_new(applied, Origin(P0, Position(6)))
    assert is_new(applied, Origin(source_id("order_created", 1), Position(0)))


def test_the_next_re_keyed_event_of_the_same_origin_is_new() -> None:
    applied = advance({}, Origin(P0, Position(7, 0)))
    assert is_new(applied, Origin(P0, Position(7, 1)))
    assert not is_new(advance(applied, Origin(P0, Position(7, 1))), Origin(P0, Position(7, 0)))


@given(
    totals=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30),
    replay_from=st.integers(min_value=0, max_value=29),
)
def test_replaying_a_suffix_changes_nothing(totals: list[int], replay_from: int) -> None:
    """At-least-once: after a crash the tail of the partition is delivered again."""
    applied: dict[str, Position] = {}
    total = 0
    delivered = list(enumerate(totals))
    delivered += delivered[min(replay_from, len(totals) - 1) :]
    for offset, cents in delivered:
        origin = Origin(P0, Position(offset))
        if is_new(applied, origin):
            total += cents
            applied = advance(applied, origin)
    assert total == sum(totals)


@given(st.integers(-(2**63), 2**63 - 1), positions)
def test_tracked_row_round_trip(available: int, applied: dict[str, Position]) -> None:
    codec = TrackedCodec(encode_stock_row, decode_stock_row)
    tracked = Tracked(StockRow(available), applied)
    decoded = codec.decode(codec.encode(tracked))
    assert decoded == tracked
    # Equal as plain tuples would be too: the rows' positions must be Positions.
    assert all(type(position) is Position for position in decoded.applied.values())
    assert [p.offset for p in decoded.applied.values()] == [p.offset for p in applied.values()]


@given(st.text(max_size=60), st.integers(0, 2**62), st.integers(0, 2**31 - 1), st.binary())
def test_origin_frame_round_trip(source: str, offset: int, index: int, payload: bytes) -> None:
    origin = Origin(source, Position(offset, index))
    framed = frame_origin(origin_header(source), offset, index, payload)
    assert unframe_origin(framed) == (origin, payload)


@pytest.mark.parametrize("data", [b"", b"\x03", b"\x02", b"\x02\x05ab"])
def test_bytes_without_an_origin_are_an_encoding_error(data: bytes) -> None:
    with pytest.raises(EncodingError):
        unframe_origin(data)


def test_rows_of_the_earlier_layout_are_refused_with_what_to_do() -> None:
    codec = TrackedCodec(encode_stock_row, decode_stock_row)
    with pytest.raises(EncodingError, match=r"earlier version .* rebuild"):
        codec.decode(b"\x01" + bytes(10))
