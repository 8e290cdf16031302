"""The join row's encoding (pipeline.streaming.joined)."""

from __future__ import annotations

import pytest

from pipeline.domain.encoding import EncodingError, decode_address, encode_address
from pipeline.domain.rules import UserAddress
from pipeline.streaming.joined import Held, Joined, JoinedCodec

CODEC = JoinedCodec(encode_address, decode_address)
HELD = (
    Held("order_created", 3, 41, 1.5, b"u1", b"\x00\x00\x00\x00\x01body", (("h", b"v"),), 1_500),
    Held("order_created", 3, 42, 2.0, None, None, (), 2_000),
)


@pytest.mark.parametrize(
    "joined",
    [Joined(UserAddress("a@shop.example")), Joined(None, HELD), Joined(None)],
)
def test_a_join_row_round_trips(joined: Joined[UserAddress]) -> None:
    assert CODEC.decode(CODEC.encode(joined)) == joined


def test_a_truncated_or_foreign_join_row_is_refused_naming_it() -> None:
    encoded = CODEC.encode(Joined(None, HELD))
    for bad in (encoded[:-1], encoded[:9], b"\x07\x00\x00\x00", encoded + b"x"):
        with pytest.raises(EncodingError, match="join row"):
            CODEC.decode(bad)


def test_a_held_record_is_the_message_as_consumed() -> None:
    held = Held.of(HELD[0], 1_500)
    assert held == HELD[0]
