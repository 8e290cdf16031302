"""The pipeline's order topology written with Quix Streams, for comparison.

Runs in its own venv (bench/.venv-quix, made by ``python -m bench`` on demand):
quixstreams 3.28.1 pins confluent-kafka <2.13, the project uses 2.16. It therefore
imports nothing from ``pipeline``; schemas are read from the .avsc files.

    order_created (Avro) ─▶ user stats (RocksDB state, key user_id) ─▶ user_order_stats
                       └─▶ lines, group_by SKU (repartition topic)
                            ─▶ stock (RocksDB state, key sku) ─▶ stock_levels

Same records in and out as the pipeline (Confluent Avro via Quix's serializers over
the registry), at-least-once, Quix's defaults otherwise. Not included (the pipeline does
them): replay-safe positions in the rows, low-stock alerts, retries and dead letters.
Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from quixstreams import Application, State
from quixstreams.models.serializers.avro import AvroDeserializer, AvroSerializer
from quixstreams.models.serializers.schema_registry import (
    SchemaRegistryClientConfig,
    SchemaRegistrySerializationConfig,
)


def update_stats(order: dict[str, Any], state: State) -> dict[str, Any]:
    count = state.get("order_count", 0) + 1
    total = state.get("total_spent_cents", 0) + order["total_cents"]
    state.set("order_count", count)
    state.set("total_spent_cents", total)
    return {
        "user_id": order["user_id"],
        "order_count": count,
        "total_spent_cents": total,
        "last_order_id": order["order_id"],
        "updated_at": order["created_at"],
    }


def order_lines(order: dict[str, Any]) -> list[dict[str, Any]]:
    at = int(order["created_at"].timestamp() * 1000)
    return [
        {"sku": item["sku"], "quantity": item["quantity"], "order_id": order["order_id"], "at": at}
        for item in order["items"]
    ]


def update_stock(line: dict[str, Any], state: State) -> dict[str, Any]:
    available = state.get("available", 0) - line["quantity"]
    state.set("available", available)
    return {"sku": line["sku"], "available": available, "updated_at": line["at"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--input", required=True, help="the order_created topic")
    parser.add_argument("--output-prefix", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--schemas-dir", required=True)
    args = parser.parse_args()

    schemas = Path(args.schemas_dir)
    registry = SchemaRegistryClientConfig(url=args.registry)
    # The bench registered the subjects; serialize with their latest version.
    serialization = SchemaRegistrySerializationConfig(
        auto_register_schemas=False, use_latest_version=True
    )

    def serializer(avsc: str) -> AvroSerializer:
        return AvroSerializer(
            json.loads((schemas / avsc).read_text()),
            schema_registry_client_config=registry,
            schema_registry_serialization_config=serialization,
        )

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="at-least-once",
    )
    orders_topic = app.topic(
        args.input,
        key_deserializer="str",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
    )
    stats_topic = app.topic(
        f"{args.output_prefix}user_order_stats",
        key_serializer="str",
        value_serializer=serializer("UserOrderStats.avsc"),
    )
    levels_topic = app.topic(
        f"{args.output_prefix}stock_levels",
        key_serializer="str",
        value_serializer=serializer("StockLevel.avsc"),
    )

    orders = app.dataframe(orders_topic)
    orders.apply(update_stats, stateful=True).to_topic(stats_topic)
    lines = orders.apply(order_lines, expand=True).group_by(
        lambda line: line["sku"],
        name="order_lines_by_sku",
        key_serializer="str",
        key_deserializer="str",
    )
    lines.apply(update_stock, stateful=True).to_topic(levels_topic)
    app.run()


if __name__ == "__main__":
    main()
