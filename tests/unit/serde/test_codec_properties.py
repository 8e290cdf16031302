"""Properties of the codec over generated inputs: round trips, and no crash on any bytes."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.serde.catalog import Catalog
from pipeline.serde.codec import Codecs, frame
from pipeline.serde.errors import (
    IncompatibleWriterSchema,
    NotConfluentFraming,
    PipelineCodecError,
    RecordValidationError,
    UndecodableRecord,
)
from pipeline.serde.registry import InMemorySchemaSource

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
MILLIS = st.datetimes(
    min_value=datetime.datetime(1970, 1, 1),
    max_value=datetime.datetime(2200, 1, 1),
    timezones=st.just(datetime.UTC),
).map(lambda at: at.replace(microsecond=at.microsecond // 1000 * 1000))

ITEMS = st.lists(
    st.fixed_dictionaries({"sku": st.text(), "quantity": INT32, "unit_price_cents": INT64}),
    max_size=5,
)
ORDERS = st.fixed_dictionaries(
    {
        "order_id": st.text(),
        "user_id": st.text(),
        "items": ITEMS,
        "total_cents": INT64,
        "created_at": MILLIS,
    }
)


@pytest.fixture(scope="module")
def codecs() -> Codecs:
    codecs = Codecs(Catalog.load(), InMemorySchemaSource(), auto_register=True)
    codecs.prepare()
    return codecs


@given(order=ORDERS)
def test_every_valid_order_round_trips(codecs: Codecs, order: dict[str, Any]) -> None:
    codec = codecs["order_created"]
    assert codec.decode(codec.encode(order)) == order


@given(
    quantity=st.one_of(
        st.integers(max_value=-(2**31) - 1),
        st.integers(min_value=2**31),
        st.floats(allow_nan=False),
        st.booleans(),
    )
)
def test_every_quantity_outside_int32_is_refused(codecs: Codecs, quantity: Any) -> None:
    item = {"sku": "s", "quantity": quantity, "unit_price_cents": 1}
    order = {"order_id": "o", "user_id": "u", "items": [item], "total_cents": 1, "created_at": 0}
    with pytest.raises(RecordValidationError, match=r"items\[0\]\.quantity"):
        codecs.encode("order_created", order)


@settings(max_examples=500)
@given(payload=st.binary(max_size=64))
def test_any_bytes_under_a_known_id_decode_or_raise_a_codec_error(
    codecs: Codecs, payload: bytes
) -> None:
    codec = codecs["order_created"]
    assert codec.schema_id is not None
    try:
        decoded = codec.decode(frame(codec.schema_id, payload))
    except PipelineCodecError:
        return
    assert set(decoded) == {"order_id", "user_id", "items", "total_cents", "created_at"}


CODEC_ERRORS = {
    "NotConfluentFraming",
    "UnknownSchemaId",
    "UndecodableRecord",
    "IncompatibleWriterSchema",
}
INPUT_TOPICS = ("order_created", "stock_adjusted", "user_registered")
POISON = st.one_of(
    st.none(),
    st.binary(max_size=64),
    # Framed: our own ids (1 to 7, another topic's schema too) and ids never registered.
    st.tuples(st.integers(0, 2**32 - 1) | st.integers(1, 8), st.binary(max_size=64)).map(
        lambda pair: frame(*pair)
    ),
)


@settings(max_examples=1000)
@given(topic=st.sampled_from(INPUT_TOPICS), value=POISON)
def test_the_decode_path_refuses_only_with_typed_codec_errors(
    codecs: Codecs, topic: str, value: bytes | None
) -> None:
    """What agents call on every message: a bad value is a PipelineCodecError (dead-lettered
    at once), never another exception that would be retried or stop the agent."""
    try:
        record = asyncio.run(codecs.decode(topic, value))
    except PipelineCodecError as error:
        assert error.error_class in CODEC_ERRORS
        return
    fields = {field["name"] for field in codecs[topic].topic_schema.schema["fields"]}
    assert set(record) == fields


@given(order=ORDERS, data=st.data())
def test_a_truncated_order_never_decodes(
    codecs: Codecs, order: dict[str, Any], data: st.DataObject
) -> None:
    encoded = codecs.encode("order_created", order)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises((UndecodableRecord, NotConfluentFraming)):
        codecs["order_created"].decode(encoded[:cut])


@given(
    user=st.fixed_dictionaries(
        {"user_id": st.text(), "email": st.text(), "name": st.text(), "registered_at": MILLIS}
    )
)
def test_another_topics_record_is_refused_as_an_incompatible_writer(
    codecs: Codecs, user: dict[str, Any]
) -> None:
    with pytest.raises(IncompatibleWriterSchema):
        codecs["order_created"].decode(codecs.encode("user_registered", user))
