"""Records per second: bare fastavro, confluent-kafka's Avro serde, and our codec.

    python -m bench.codec [--records 20000] [--repeats 7]

Uses the registry from the settings (``pipeline stack up`` starts one) under the
subject ``bench-order_created-value``; every implementation encodes and decodes
the same OrderCreated record. Prints the median of the repeats and each time as a
ratio to bare fastavro (1.00 = as fast; higher is slower).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import schemaless_reader, schemaless_writer

from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.topics import TopicNames

PREFIX = "bench-"
TOPIC = TopicNames(prefix=PREFIX, app_id="").order_created
RECORD: dict[str, Any] = {
    "order_id": "order-000123",
    "user_id": "user-42",
    "items": [
        {"sku": "sku-1", "quantity": 2, "unit_price_cents": 1999},
        {"sku": "sku-7", "quantity": 1, "unit_price_cents": 4500},
        {"sku": "sku-9", "quantity": 5, "unit_price_cents": 250},
    ],
    "total_cents": 9748,
    "created_at": datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC),
}


def rate(operation: Callable[[], object], records: int, repeats: int) -> float:
    """Median records per second of ``operation`` over ``repeats`` runs of ``records`` calls."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(records):
            operation()
        rates.append(records / (time.perf_counter() - start))
    return statistics.median(rates)


def async_rate(operation: Callable[[], Any], records: int, repeats: int) -> float:
    """``rate`` for a coroutine function, awaited in one running loop."""

    async def measure() -> float:
        rates = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(records):
                await operation()
            rates.append(records / (time.perf_counter() - start))
        return statistics.median(rates)

    return asyncio.run(measure())


@click.command()
@click.option("--records", default=20_000, show_default=True, help="Records per repeat.")
@click.option("--repeats", default=7, show_default=True, help="Repeats; the median is shown.")
def main(records: int, repeats: int) -> None:
    settings = replace(Settings.from_env(), topic_prefix=PREFIX, auto_register_schemas=True)
    codecs = Codecs.from_settings(settings)
    codecs.prepare()  # registers bench-*-value subjects (idempotent)
    ours = codecs[TOPIC]
    parsed = ours.topic_schema.parsed
    framed = ours.encode(RECORD)
    payload = framed[5:]

    def bare_encode() -> bytes:
        out = io.BytesIO()
        schemaless_writer(out, parsed, RECORD)
        return out.getvalue()

    def bare_decode() -> object:
        return schemaless_reader(io.BytesIO(payload), parsed)

    client = SchemaRegistryClient(settings.registry_client_config())
    strategy = {"subject.name.strategy": topic_subject_name_strategy}  # not "associations"
    serializer = AvroSerializer(
        client, ours.topic_schema.schema_str, conf={"auto.register.schemas": False, **strategy}
    )
    deserializer = AvroDeserializer(client, ours.topic_schema.schema_str, conf=strategy)
    context = SerializationContext(TOPIC, MessageField.VALUE)
    assert deserializer(serializer(RECORD, context), context) == RECORD
    assert ours.decode(framed) == RECORD

    rows: list[tuple[str, Callable[[], float], Callable[[], float]]] = [
        (
            "bare fastavro",
            lambda: rate(bare_encode, records, repeats),
            lambda: rate(bare_decode, records, repeats),
        ),
        (
            "confluent-kafka AvroSerializer/AvroDeserializer",
            lambda: rate(lambda: serializer(RECORD, context), records, repeats),
            lambda: rate(lambda: deserializer(framed, context), records, repeats),
        ),
        (
            "ours: TopicCodec.encode / .decode (sync)",
            lambda: rate(lambda: ours.encode(RECORD), records, repeats),
            lambda: rate(lambda: ours.decode(framed), records, repeats),
        ),
        (
            "ours: Codecs.encode / await Codecs.decode",
            lambda: rate(lambda: codecs.encode(TOPIC, RECORD), records, repeats),
            lambda: async_rate(lambda: codecs.decode(TOPIC, framed), records, repeats),
        ),
    ]
    click.echo(f"OrderCreated with 3 items, {records} records x {repeats} repeats (median)")
    click.echo(f"{'':<50} {'encode rec/s':>13} {'x time':>7} {'decode rec/s':>13} {'x time':>7}")
    baseline: tuple[float, float] | None = None
    for name, encode, decode in rows:
        encode_rate, decode_rate = encode(), decode()
        if baseline is None:
            baseline = (encode_rate, decode_rate)
        click.echo(
            f"{name:<50} {encode_rate:>13,.0f} {baseline[0] / encode_rate:>7.2f} "
            f"{decode_rate:>13,.0f} {baseline[1] / decode_rate:>7.2f}"
        )


if __name__ == "__main__":
    main()
