"""The bare limit: confluent-kafka consume → fastavro decode → fastavro encode → produce,
in one Python process, with no state.

    python -m bench.bare --input P.order_created --output-prefix B. --group G --count N

For each order it writes what the pipeline writes per order, minus the state: one
UserOrderStats (as if it were the user's first order) to ``<output-prefix>user_order_stats``
and one StockLevel per line (``-quantity``, as if the SKU started at 0) to
``<output-prefix>stock_levels``, keyed like the pipeline's. No repartition hop, no tables,
no retries or dead letters: an upper bound for a Python process on this machine, not a
competitor. Exits after ``--count`` orders, once every output is acknowledged, printing
``{"orders": n, "seconds": s}``: from the first record consumed to the last acknowledged.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import replace
from typing import Any

import click
from fastavro import schemaless_reader, schemaless_writer

from bench.bare_clients import BareProducer, bare_consumer, orders_schema
from pipeline.serde.codec import Codecs, header
from pipeline.settings import Settings
from pipeline.topics import TopicNames


@click.command()
@click.option("--input", "input_topic", required=True)
@click.option("--output-prefix", required=True)
@click.option("--group", required=True)
@click.option("--count", type=click.IntRange(1), required=True)
def main(input_topic: str, output_prefix: str, group: str, count: int) -> None:
    settings = replace(Settings.from_env(), topic_prefix=output_prefix, auto_register_schemas=True)
    codecs = Codecs.from_settings(settings)
    outputs = TopicNames(prefix=output_prefix, app_id="")
    stats_topic, levels_topic = outputs.user_order_stats, outputs.stock_levels
    # Schema ids and parsed schemas once, up front; the loop below is bare fastavro.
    stats_codec, levels_codec = codecs[stats_topic], codecs[levels_topic]
    stats_header = header(stats_codec.prepare())
    levels_header = header(levels_codec.prepare())
    stats_schema = stats_codec.topic_schema.parsed
    levels_schema = levels_codec.topic_schema.parsed
    # The orders were written with the catalog's OrderCreated schema: read with it as is.
    writer_schema = orders_schema(settings, input_topic)
    consumer = bare_consumer(settings, group)
    producer = BareProducer(settings)
    send = producer.send

    consumer.subscribe([input_topic])
    done = 0
    first: float | None = None
    try:
        while done < count:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if first is None:
                    first = time.monotonic()
                if message.error() is not None:
                    continue
                stream = io.BytesIO(message.value() or b"")
                stream.seek(5)
                order: dict[str, Any] = schemaless_reader(  # type: ignore[assignment]
                    stream, writer_schema, None
                )
                out = io.BytesIO()
                out.write(stats_header)
                user = order["user_id"]
                schemaless_writer(
                    out,
                    stats_schema,
                    {
                        "user_id": user,
                        "order_count": 1,
                        "total_spent_cents": order["total_cents"],
                        "last_order_id": order["order_id"],
                        "updated_at": order["created_at"],
                    },
                )
                send(stats_topic, message.key() or user.encode(), out.getvalue())
                for item in order["items"]:
                    out = io.BytesIO()
                    out.write(levels_header)
                    schemaless_writer(
                        out,
                        levels_schema,
                        {
                            "sku": item["sku"],
                            "available": -item["quantity"],
                            "updated_at": order["created_at"],
                        },
                    )
                    send(levels_topic, item["sku"].encode(), out.getvalue())
                done += 1
            producer.poll()
        producer.flush()
        if first is not None:
            # Its own clock: at tens of thousands of orders/s the whole run takes well under
            # a second, too short for the bench's 0.05 s polling of end offsets.
            print(json.dumps({"orders": done, "seconds": time.monotonic() - first}), flush=True)
    finally:
        consumer.close()
    producer.exit_on_failures()


if __name__ == "__main__":
    main()
