"""The bare topology: the pipeline's order topology as the simplest confluent-kafka + fastavro
loop, with dicts for state. The ceiling for Python on this work.

    python -m bench.bare_topology --input P.order_created --output-prefix B. --group G --count N

One process, one consumer on both ``order_created`` and the repartition topic, one
idempotent producer (the worker's settings: murmur2, acks=all, linger.ms 1):

- an order: the user's (count, total) in a dict → one UserOrderStats to
  ``user_order_stats`` and one changelog record (the row, in the pipeline's layout:
  ``pipeline.domain.encoding``) to the user stats changelog; each line re-keyed by SKU
  to the repartition topic (the pipeline's order-line layout);
- an order line: the SKU's stock in a dict → one StockLevel to ``stock_levels``, one
  changelog record, and a LowStockAlert when it crosses the threshold downward.

Topics are the deployment's own (``--output-prefix``, the env's app id): the same
repartition and compacted changelog topics the pipeline would use. No retries, no dead
letters, no replay positions in the rows, no Faust. Exits once ``--count`` orders and
every line it re-keyed were processed and every output acknowledged, printing
``{"orders": n, "seconds": s}``: from the first record consumed to the last acknowledged.
"""

from __future__ import annotations

import io
import json
import struct
import time
from dataclasses import replace
from typing import Any

import click
from confluent_kafka import Message
from fastavro import schemaless_reader, schemaless_writer

from bench.bare_clients import BareProducer, bare_consumer, orders_schema
from pipeline.domain.rules import millis
from pipeline.serde.codec import Codecs, header
from pipeline.settings import Settings
from pipeline.topics import TopicNames

# pipeline.domain.encoding's layouts, packed inline: version 1, then the fields.
STATS_ROW = struct.Struct(">Bqq")  # + last_order_id
STOCK_ROW = struct.Struct(">Bq")
LINE = struct.Struct(">Biq")  # quantity, created_at ms, + order_id


@click.command()
@click.option("--input", "input_topic", required=True)
@click.option("--output-prefix", required=True)
@click.option("--group", required=True)
@click.option("--count", type=click.IntRange(1), required=True)
def main(input_topic: str, output_prefix: str, group: str, count: int) -> None:
    settings = replace(Settings.from_env(), topic_prefix=output_prefix, auto_register_schemas=True)
    names = TopicNames.from_settings(settings)
    lines_topic = names.order_lines_by_sku
    stats_changelog = names.changelog("user_order_stats")
    stock_changelog = names.changelog("stock")
    threshold = settings.low_stock_threshold
    codecs = Codecs.from_settings(settings)
    writers = {}
    for topic in (names.user_order_stats, names.stock_levels, names.low_stock_alerts):
        codec = codecs[topic]
        writers[topic] = (header(codec.prepare()), codec.topic_schema.parsed)
    order_schema = orders_schema(settings, input_topic)
    consumer = bare_consumer(settings, group)
    producer = BareProducer(settings)
    send = producer.send

    def send_record(topic: str, key: bytes, record: dict[str, Any]) -> None:
        prefix, schema = writers[topic]
        out = io.BytesIO()
        out.write(prefix)
        schemaless_writer(out, schema, record)
        send(topic, key, out.getvalue())

    stats: dict[str, tuple[int, int]] = {}
    stock: dict[str, int] = {}
    lines_sent = 0

    def on_order(message: Message) -> None:
        nonlocal lines_sent
        stream = io.BytesIO(message.value() or b"")
        stream.seek(5)
        order: dict[str, Any] = schemaless_reader(stream, order_schema, None)  # type: ignore[assignment]
        user, order_id = order["user_id"], order["order_id"]
        key = user.encode()
        orders, spent = stats.get(user, (0, 0))
        orders, spent = orders + 1, spent + order["total_cents"]
        stats[user] = (orders, spent)
        at = millis(order["created_at"])
        send_record(
            names.user_order_stats,
            key,
            {
                "user_id": user,
                "order_count": orders,
                "total_spent_cents": spent,
                "last_order_id": order_id,
                "updated_at": at,
            },
        )
        send(stats_changelog, key, STATS_ROW.pack(1, orders, spent) + order_id.encode())
        for item in order["items"]:
            line = LINE.pack(1, item["quantity"], at) + order_id.encode()
            send(lines_topic, item["sku"].encode(), line)
        lines_sent += len(order["items"])

    def on_line(message: Message) -> None:
        key = message.key() or b""
        value = message.value() or b""
        sku = key.decode()
        _, quantity, at = LINE.unpack_from(value)
        before = stock.get(sku, 0)
        available = stock[sku] = before - quantity
        send_record(names.stock_levels, key, {"sku": sku, "available": available, "updated_at": at})
        send(stock_changelog, key, STOCK_ROW.pack(1, available))
        if before >= threshold > available:
            send_record(
                names.low_stock_alerts,
                key,
                {"sku": sku, "available": available, "threshold": threshold, "at": at},
            )

    consumer.subscribe([input_topic, lines_topic])
    orders_done = lines_done = 0
    first: float | None = None
    try:
        while orders_done < count or lines_done < lines_sent:
            for message in consumer.consume(num_messages=500, timeout=0.1):
                if message.error() is not None:
                    continue
                if first is None:
                    first = time.monotonic()
                if message.topic() == lines_topic:
                    on_line(message)
                    lines_done += 1
                else:
                    on_order(message)
                    orders_done += 1
            producer.poll()
        producer.flush()
        if first is not None:
            print(json.dumps({"orders": orders_done, "seconds": time.monotonic() - first}))
    finally:
        consumer.close()
    producer.exit_on_failures()


if __name__ == "__main__":
    main()
