"""The analytics service's two windowed aggregations written with Quix Streams, for
comparison (bench.windowed).

Runs in the Quix peer's own venv (bench/quix_env.py) and imports nothing from ``pipeline``.

    order_created (Avro; event time: created_at, Quix's timestamp_extractor)
      ├─▶ sales per SKU of the order (apply, expand) ─▶ group_by SKU (repartition topic)
      │     ─▶ tumbling_window(1 h, grace).reduce(...).final("partition") ─▶ sku_sales_hourly
      └─▶ hopping_window(24 h, step 1 h, grace).reduce(...).final("partition")

The pipeline's analytics agents (pipeline/agents/analytics.py) do the same: one sale per
SKU of an order (its lines summed), re-keyed by SKU, summed per SKU and hour into units,
revenue and orders, a ``shop.SkuSales`` final per closed hour; each user's spend and
orders in 24-hour windows advancing hourly, closed and dropped with no output. Closing by
partition is how the pipeline closes windows (its partition's stream time reaches end +
grace); Quix's default closes by key. Not included (the pipeline does them): late records
to a dead-letter topic (Quix logs and skips them), replay-safe positions in the rows,
retention past the close, the range views. At-least-once, Quix's defaults otherwise; runs
until SIGTERM.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quix_common import Avro, application, arguments

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def created_at(value: dict[str, Any], headers: Any, timestamp: int, kind: Any) -> int:
    """The order's event time, as the analytics agents take it (its created_at)."""
    at: datetime = value["created_at"]
    return int(at.timestamp() * 1000)


def sales_by_sku(order: dict[str, Any]) -> list[dict[str, Any]]:
    """The order's lines summed per SKU (pipeline.domain.analytics.sales_by_sku)."""
    sales: dict[str, dict[str, Any]] = {}
    for item in order["items"]:
        sale = sales.setdefault(item["sku"], {"sku": item["sku"], "quantity": 0, "revenue": 0})
        sale["quantity"] += item["quantity"]
        sale["revenue"] += item["quantity"] * item["unit_price_cents"]
    return list(sales.values())


def first_sale(sale: dict[str, Any]) -> dict[str, int]:
    return {"units": sale["quantity"], "revenue_cents": sale["revenue"], "orders": 1}


def add_sale(row: dict[str, int], sale: dict[str, Any]) -> dict[str, int]:
    return {
        "units": row["units"] + sale["quantity"],
        "revenue_cents": row["revenue_cents"] + sale["revenue"],
        "orders": row["orders"] + 1,
    }


def sku_sales(window: dict[str, Any], sku: str, timestamp: int, headers: Any) -> dict[str, Any]:
    """A closed hour as the ``shop.SkuSales`` record the pipeline writes."""
    row = window["value"]
    return {"sku": sku, "window_start": window["start"], "window_end": window["end"], **row}


def first_spend(order: dict[str, Any]) -> dict[str, int]:
    return {"spent_cents": order["total_cents"], "orders": 1}


def add_spend(row: dict[str, int], order: dict[str, Any]) -> dict[str, int]:
    return {"spent_cents": row["spent_cents"] + order["total_cents"], "orders": row["orders"] + 1}


def main() -> None:
    parser = arguments(__doc__.split("\n", 1)[0])
    parser.add_argument("--grace-ms", type=int, required=True)
    args = parser.parse_args()

    avro = Avro(args)
    app = application(args)
    orders_topic = app.topic(
        args.input,
        key_deserializer="str",
        value_deserializer=avro.deserializer(),
        timestamp_extractor=created_at,
    )
    finals_topic = app.topic(
        f"{args.output_prefix}sku_sales_hourly",
        key_serializer="str",
        value_serializer=avro.serializer("SkuSales.avsc"),
    )

    orders = app.dataframe(orders_topic)
    sales = orders.apply(sales_by_sku, expand=True).group_by(
        lambda sale: sale["sku"], name="sales_by_sku", key_serializer="str", key_deserializer="str"
    )
    (
        sales.tumbling_window(HOUR_MS, grace_ms=args.grace_ms, name="sku_sales")
        .reduce(add_sale, first_sale)
        .final(closing_strategy="partition")
        .apply(sku_sales, metadata=True)
        .to_topic(finals_topic)
    )
    (
        orders.hopping_window(DAY_MS, HOUR_MS, grace_ms=args.grace_ms, name="user_spend")
        .reduce(add_spend, first_spend)
        .final(closing_strategy="partition")
    )
    app.run()


if __name__ == "__main__":
    main()
