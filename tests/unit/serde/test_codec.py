from __future__ import annotations

import asyncio
import datetime
import json
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from pipeline.serde.catalog import Catalog, default_schema_dir
from pipeline.serde.codec import CodecNotPrepared, Codecs, WriterSchemas, frame, schema_id_of
from pipeline.serde.errors import (
    IncompatibleWriterSchema,
    NotConfluentFraming,
    RecordValidationError,
    RegistryUnavailable,
    SchemaNotCached,
    UndecodableRecord,
    UnknownSchemaId,
    UnknownTopic,
)
from pipeline.serde.registry import InMemorySchemaSource, SchemaRegistry
from pipeline.settings import Settings

CREATED_AT = datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.UTC)


def order(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "order_id": "o-1",
        "user_id": "u-1",
        "items": [
            {"sku": "sku-1", "quantity": 2, "unit_price_cents": 150},
            {"sku": "sku-2", "quantity": 1, "unit_price_cents": 99},
        ],
        "total_cents": 399,
        "created_at": CREATED_AT,
    }
    record.update(changes)
    return record


def schemas_with_order_v2(directory: Path) -> Path:
    """A copy of the schemas where OrderCreated gained an optional field (v2)."""
    shutil.copytree(default_schema_dir(), directory, dirs_exist_ok=True)
    path = directory / "OrderCreated.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append(
        {"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Coupon code."}
    )
    path.write_text(json.dumps(schema))
    return directory


@pytest.fixture
def source() -> InMemorySchemaSource:
    return InMemorySchemaSource()


@pytest.fixture
def codecs(source: InMemorySchemaSource) -> Codecs:
    codecs = Codecs(Catalog.load(), source, auto_register=True)
    codecs.prepare()
    return codecs


def test_encoding_frames_avro_with_magic_byte_and_big_endian_id(codecs: Codecs) -> None:
    data = codecs.encode("order_created", order())
    schema_id = codecs["order_created"].schema_id
    assert schema_id is not None
    assert data[:5] == b"\x00" + struct.pack(">I", schema_id)
    assert schema_id_of(data) == schema_id


def test_round_trip_gives_back_the_record(codecs: Codecs) -> None:
    codec = codecs["order_created"]
    assert codec.decode(codec.encode(order())) == order()


def test_timestamps_encode_from_epoch_millis_and_decode_to_utc_datetimes(codecs: Codecs) -> None:
    codec = codecs["order_created"]
    millis = int(CREATED_AT.timestamp() * 1000)
    assert codec.decode(codec.encode(order(created_at=millis)))["created_at"] == CREATED_AT


def test_lookup_without_auto_register_fails_for_an_unregistered_schema(
    source: InMemorySchemaSource,
) -> None:
    codecs = Codecs(Catalog.load(), source, auto_register=False)
    with pytest.raises(UnknownSchemaId, match="order_created-value"):
        codecs["order_created"].prepare()


def test_lookup_without_auto_register_finds_a_registered_schema(
    source: InMemorySchemaSource,
) -> None:
    entry = Catalog.load()["order_created"]
    schema_id = source.add(entry.subject, entry.schema_str)
    codecs = Codecs(Catalog.load(), source, auto_register=False)
    assert codecs["order_created"].prepare() == schema_id


def test_encode_before_prepare_says_what_to_do(source: InMemorySchemaSource) -> None:
    codecs = Codecs(Catalog.load(), source, auto_register=True)
    with pytest.raises(CodecNotPrepared, match=r"prepare\(\)"):
        codecs.encode("order_created", order())


def test_v1_reader_reads_v2_data_and_v2_reader_reads_v1_data(
    source: InMemorySchemaSource, codecs: Codecs, tmp_path: Path
) -> None:
    v1 = codecs["order_created"]
    v2_codecs = Codecs(Catalog.load(schemas_with_order_v2(tmp_path)), source, auto_register=True)
    v2_codecs.prepare()
    v2 = v2_codecs["order_created"]
    assert v1.schema_id != v2.schema_id

    v2_data = v2.encode(order(coupon="SPRING"))
    assert v2.decode(v2_data)["coupon"] == "SPRING"
    with pytest.raises(SchemaNotCached):
        v1.decode(v2_data)  # the sync path never asks the registry
    assert asyncio.run(v1.decode_async(v2_data)) == order()  # coupon dropped

    v1_data = v1.encode(order())
    assert asyncio.run(v2.decode_async(v1_data)) == order(coupon=None)  # default filled in


def test_a_writer_schema_the_reader_cannot_resolve_is_its_own_error(
    source: InMemorySchemaSource, codecs: Codecs
) -> None:
    foreign = json.dumps(
        {"type": "record", "name": "shop.OrderCreated", "fields": [{"name": "x", "type": "int"}]}
    )
    foreign_id = source.add("elsewhere-value", foreign)
    data = frame(foreign_id, b"\x02")
    with pytest.raises(IncompatibleWriterSchema) as caught:
        asyncio.run(codecs.decode("order_created", data))
    assert caught.value.schema_id == foreign_id


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short"),
        (b"\x00\x00\x00", "too short"),
        (b"\x01\x00\x00\x00\x01abc", "0x01"),
        (b'{"order_id": "o-1"}', "0x7b"),
    ],
)
def test_bytes_without_confluent_framing_are_refused(
    codecs: Codecs, data: bytes, message: str
) -> None:
    with pytest.raises(NotConfluentFraming, match=message) as caught:
        codecs["order_created"].decode(data)
    assert caught.value.schema_id is None
    assert caught.value.error_class == "NotConfluentFraming"


def test_a_tombstone_is_not_confluent_framing(codecs: Codecs) -> None:
    with pytest.raises(NotConfluentFraming, match="tombstone"):
        asyncio.run(codecs.decode("order_created", None))


def test_an_id_the_registry_does_not_know_is_unknown_schema_id(codecs: Codecs) -> None:
    with pytest.raises(UnknownSchemaId) as caught:
        asyncio.run(codecs.decode("order_created", frame(9999, b"\x02")))
    assert not isinstance(caught.value, SchemaNotCached)
    assert caught.value.schema_id == 9999


def test_truncated_avro_is_undecodable(codecs: Codecs) -> None:
    data = codecs.encode("order_created", order())
    with pytest.raises(UndecodableRecord) as caught:
        codecs["order_created"].decode(data[:-4])
    assert caught.value.schema_id == codecs["order_created"].schema_id


def test_trailing_bytes_are_undecodable(codecs: Codecs) -> None:
    data = codecs.encode("order_created", order())
    with pytest.raises(UndecodableRecord, match="1 bytes left over"):
        codecs["order_created"].decode(data + b"\x00")


def test_bytes_of_another_record_are_undecodable(codecs: Codecs) -> None:
    stock_id = codecs["stock_levels"].schema_id
    assert stock_id is not None
    # Valid framing and a known id, but the payload is not a StockLevel.
    with pytest.raises(UndecodableRecord):
        codecs["stock_levels"].decode(frame(stock_id, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"total_cents": 3.99}, "total_cents: 3.99 (float) is not a long"),
        ({"total_cents": "399"}, "total_cents: '399' (str) is not a long"),
        ({"user_id": None}, "user_id: None (NoneType) is not a string"),
        ({"created_at": "yesterday"}, "created_at: 'yesterday' (str) is not a long"),
        ({"items": "sku-1"}, "items: 'sku-1' (str) is not an array"),
    ],
)
def test_a_bad_value_is_refused_naming_the_field_and_value(
    codecs: Codecs, changes: dict[str, Any], problem: str
) -> None:
    with pytest.raises(RecordValidationError) as caught:
        codecs.encode("order_created", order(**changes))
    assert problem in caught.value.reason
    assert caught.value.record_name == "shop.OrderCreated"


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ({"sku": "s", "quantity": True, "unit_price_cents": 1}, "items[0].quantity: True (bool)"),
        ({"sku": "s", "quantity": 2**31, "unit_price_cents": 1}, "items[0].quantity: 2147483648"),
        ({"sku": "s", "quantity": 1.5, "unit_price_cents": 1}, "items[0].quantity: 1.5 (float)"),
        ({"sku": "s", "quantity": 1}, "items[0].unit_price_cents: missing"),
    ],
)
def test_numbers_fastavro_would_accept_silently_are_refused(
    codecs: Codecs, item: dict[str, Any], problem: str
) -> None:
    with pytest.raises(RecordValidationError, match=re.escape(problem)):
        codecs.encode("order_created", order(items=[item]))


def test_a_missing_required_field_is_named(codecs: Codecs) -> None:
    record = order()
    del record["order_id"]
    with pytest.raises(
        RecordValidationError, match="order_id: missing, and the field has no default"
    ):
        codecs.encode("order_created", record)


def test_validate_lists_every_problem_at_once(codecs: Codecs) -> None:
    with pytest.raises(RecordValidationError) as caught:
        codecs["order_created"].validate(order(order_id=1, total_cents=None))
    assert len(caught.value.problems) == 2
    assert caught.value.problems[0].startswith("order_id: 1 (int)")
    assert caught.value.problems[1].startswith("total_cents: None")


def test_fields_with_defaults_may_be_left_out(source: InMemorySchemaSource, tmp_path: Path) -> None:
    codecs = Codecs(Catalog.load(schemas_with_order_v2(tmp_path)), source, auto_register=True)
    codecs.prepare()
    codec = codecs["order_created"]
    assert codec.decode(codec.encode(order()))["coupon"] is None


def test_an_unreachable_registry_with_nothing_cached_is_registry_unavailable() -> None:
    settings = Settings(schema_registry_url="http://127.0.0.1:9/apis/ccompat/v7")
    codecs = Codecs(
        Catalog.load(),
        SchemaRegistry(
            SchemaRegistryClient({**settings.registry_client_config(), "max.retries": 0})
        ),
        auto_register=False,
    )
    with pytest.raises(RegistryUnavailable) as caught:
        asyncio.run(codecs.decode("order_created", frame(7, b"\x02")))
    assert caught.value.schema_id == 7
    with pytest.raises(RegistryUnavailable, match="order_created-value"):
        codecs["order_created"].prepare()


def test_a_topic_without_schema_is_named(codecs: Codecs) -> None:
    with pytest.raises(UnknownTopic, match=r"'orders' has no schema in .*subjects\.yaml"):
        codecs.encode("orders", order())


def test_a_naive_datetime_is_refused_because_it_would_be_read_as_local_time(
    codecs: Codecs,
) -> None:
    naive = datetime.datetime(2026, 1, 2, 3, 4, 5)
    with pytest.raises(RecordValidationError, match=r"created_at: .* has no time zone"):
        codecs.encode("order_created", order(created_at=naive))


class LateSource(InMemorySchemaSource):
    """A registry where a schema becomes visible only after some asks (as one registered
    a moment ago on another node), counting the asks."""

    def __init__(self, visible_after: int) -> None:
        super().__init__()
        self.asks = 0
        self.visible_after = visible_after

    def schema_text(self, schema_id: int) -> str:
        self.asks += 1
        if self.asks <= self.visible_after:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the registry")
        return super().schema_text(schema_id)


def test_an_unknown_id_is_asked_again_and_found_when_registered_a_moment_ago() -> None:
    source = LateSource(visible_after=2)
    codecs = Codecs(Catalog.load(), source, auto_register=True, unknown_recheck_s=5.0)
    codecs.prepare(["order_created"])
    data = codecs.encode("order_created", order())
    reader = Codecs(Catalog.load(), source, auto_register=False, unknown_recheck_s=5.0)
    source.asks = 0
    assert asyncio.run(reader.decode("order_created", data)) == order()
    assert source.asks == 3


def test_an_id_still_unknown_after_the_recheck_is_believed_for_the_memory_time() -> None:
    source = LateSource(visible_after=10**9)
    codecs = Codecs(
        Catalog.load(), source, auto_register=False, unknown_recheck_s=0.3, unknown_memory_s=60.0
    )
    with pytest.raises(UnknownSchemaId, match=r"asked again for 0\.3 s"):
        asyncio.run(codecs.decode("order_created", frame(4242, b"\x02")))
    asks = source.asks
    assert asks > 1
    with pytest.raises(UnknownSchemaId) as believed:
        codecs.decode_known("order_created", frame(4242, b"\x02"))  # no ask
    assert not isinstance(believed.value, SchemaNotCached)
    assert source.asks == asks
    codecs.writers.clock = lambda: time.monotonic() + 61.0
    with pytest.raises(SchemaNotCached):  # forgotten: asked again when next met
        codecs.decode_known("order_created", frame(4242, b"\x02"))


def test_ids_prefetched_together_are_asked_again_side_by_side_and_then_forgotten() -> None:
    source = LateSource(visible_after=10**9)
    codecs = Codecs(
        Catalog.load(), source, auto_register=False, unknown_recheck_s=0.3, unknown_memory_s=60.0
    )
    writers = codecs.writers

    async def prefetch_both() -> None:
        codecs.prefetch(frame(4242, b"\x02"))
        codecs.prefetch(frame(4243, b"\x02"))
        codecs.prefetch(frame(4242, b"\x02"))  # under way: not a second lookup
        codecs.prefetch(b"\x07not framed")  # its decode says why
        lookups = list(writers._lookups.values())
        assert len(lookups) == 2  # both asked again side by side, not one after the other
        await asyncio.wait(lookups)

    asyncio.run(prefetch_both())
    for schema_id in (4242, 4243):
        with pytest.raises(UnknownSchemaId, match=r"asked again for 0\.3 s"):
            codecs.decode_known("order_created", frame(schema_id, b"\x02"))
    assert writers._lookups == {}  # each error is kept once, as believed unknown


def test_a_found_schema_leaves_no_lookup_behind() -> None:
    source = LateSource(visible_after=0)
    codecs = Codecs(Catalog.load(), source, auto_register=True)
    codecs.prepare(["order_created"])
    data = codecs.encode("order_created", order())
    reader = Codecs(Catalog.load(), source, auto_register=False)

    async def prefetched() -> None:
        reader.prefetch(data)
        await asyncio.wait(list(reader.writers._lookups.values()))

    asyncio.run(prefetched())
    assert reader.writers._lookups == {}
    assert reader.decode_known("order_created", data) == order()


def test_unknown_ids_whose_memory_time_is_up_are_forgotten_as_new_ones_come() -> None:
    now = [0.0]
    writers = WriterSchemas(LateSource(visible_after=10**9), memory_s=10.0, clock=lambda: now[0])

    async def met(schema_id: int) -> None:
        with pytest.raises(UnknownSchemaId):
            await writers.fetch_async(schema_id)

    for step in range(100):
        now[0] = float(step)
        asyncio.run(met(step))
    assert sorted(writers._unknown) == list(range(90, 100))  # the last 10 s of them
