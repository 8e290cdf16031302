"""AvroValueSchema's decoder, called as Faust's conductor calls it (no broker needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from faust.types.tuples import Message

from pipeline.engine.faust_schema import AvroValueSchema, DecodeErrorLog
from pipeline.serde.catalog import Catalog
from pipeline.serde.codec import Codecs
from pipeline.serde.errors import NotConfluentFraming, PipelineCodecError, UndecodableKey
from pipeline.serde.registry import InMemorySchemaSource

LEVEL = {"sku": "sku-1", "available": 3, "updated_at": 0}


@pytest.fixture
def codecs() -> Codecs:
    codecs = Codecs(Catalog.load(), InMemorySchemaSource(), auto_register=True)
    codecs.prepare()
    return codecs


@pytest.fixture
def app() -> faust.App:
    return faust.App(
        "unit-faust-schema", broker="kafka://127.0.0.1:9", web_enabled=False, autodiscover=False
    )


def message(offset: int, key: bytes | None, value: bytes | None) -> Message:
    delivered = Message("stock_levels", 0, offset, 0.0, 0, [], key, value, None)
    delivered.incref(1)  # as the conductor does, once per subscribing channel
    return delivered


def decode(app: faust.App, schema: AvroValueSchema, delivered: Message) -> Any:
    return asyncio.run(schema.compile(app)(delivered, propagate=True))


def test_a_good_message_becomes_an_event_with_a_str_key_and_a_dict_value(
    app: faust.App, codecs: Codecs
) -> None:
    schema = AvroValueSchema(codecs["stock_levels"])
    event = decode(app, schema, message(0, b"sku-1", codecs.encode("stock_levels", LEVEL)))
    assert event.key == "sku-1"
    assert event.value["available"] == 3


@pytest.mark.parametrize(
    ("key", "value", "error_class"),
    [
        (b"sku-1", b"plain text", NotConfluentFraming),
        (b"sku-1", None, NotConfluentFraming),
        (b"\xff\xfe", b"\x00\x00\x00\x00\x01", UndecodableKey),
    ],
)
def test_a_bad_message_goes_to_the_hook_is_acked_and_skipped(
    app: faust.App, codecs: Codecs, key: bytes, value: bytes | None, error_class: type
) -> None:
    hook = DecodeErrorLog()
    schema = AvroValueSchema(codecs["stock_levels"], on_decode_error=hook)
    bad = message(7, key, value)
    assert decode(app, schema, bad) is None  # Faust's stream skips None
    assert bad.acked
    assert hook.counts == {error_class.__name__: 1}
    assert hook.recent[0][0] is bad


def test_a_failing_hook_does_not_raise_and_the_message_is_still_acked(
    app: faust.App, codecs: Codecs
) -> None:
    async def broken_hook(message: Message, error: PipelineCodecError) -> None:
        raise RuntimeError("dead-letter topic unavailable")

    schema = AvroValueSchema(codecs["stock_levels"], on_decode_error=broken_hook)
    bad = message(8, b"k", b"garbage")
    assert decode(app, schema, bad) is None
    assert bad.acked


def test_the_hook_hears_of_a_message_once_even_with_several_channels(
    app: faust.App, codecs: Codecs
) -> None:
    hook = DecodeErrorLog()
    schema = AvroValueSchema(codecs["stock_levels"], on_decode_error=hook)
    bad = message(9, b"k", b"garbage")
    decode(app, schema, bad)
    decode(app, schema, bad)  # the conductor decodes again for a second channel
    assert sum(hook.counts.values()) == 1
