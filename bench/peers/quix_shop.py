"""The pipeline's order topology written with Quix Streams, for comparison.

Runs in its own venv (bench/.venv-quix, made by ``python -m bench`` on demand):
quixstreams 3.28.1 pins confluent-kafka <2.13, the project uses 2.16. It therefore
imports nothing from ``pipeline``; schemas are read from the .avsc files.

    order_created (Avro) ─▶ user stats (RocksDB state, key user_id) ─▶ user_order_stats
                       ├─▶ lines, group_by SKU (repartition topic)
                       │    ─▶ stock (RocksDB state, key sku) ─▶ stock_levels
    user_registered ───┴─▶ concat ─▶ address and held orders (RocksDB state, key user_id)
                                      ─▶ notifications (welcome, order_confirmed)

The confirmations (issue 28's join) are a stateful ``apply`` over the two co-partitioned
topics ``concat``-ed, its State holding the user's address and the orders held for want of
one: the closest Quix construct that emits the pipeline's records. ``join_asof`` (inner)
drops an order whose registration is not there yet and its left join passes None;
``join_interval`` confirms an order again for each registration in its interval and keeps
every order in its store; a buffered ``join_lookup`` reads an outside source and releases a
held record on the key's next resolving record or at its grace, with defaults, not when
the registration arrives. With ``--no-confirmations`` (a pipeline before the join) it
writes the welcomes only.

``concat`` of two topics (as in every Quix join) makes the app read them
timestamp-aligned, from a buffer refilled once per ``consumer_poll_timeout``: the peers set
``quix_common.POLL_TIMEOUT`` (docs/benchmarks.md has why).

Same records in and out as the pipeline (Confluent Avro via Quix's serializers over
the registry), at-least-once, Quix's defaults otherwise. Not included (the pipeline does
them): replay-safe positions in the rows, low-stock alerts, retries and dead letters (an
order past the hold bound is logged and dropped), the hold's age bound. Runs until SIGTERM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from quix_common import Avro, application, arguments
from quixstreams import State


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


def _millis(at: datetime | int) -> int:
    return at if isinstance(at, int) else int(at.timestamp() * 1000)


def notification(
    user_id: str, template: str, address: str, at_ms: int, order_id: str | None
) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "channel": "email",
        "template": template,
        "address": address,
        "requested_at": at_ms,
        "order_id": order_id,
    }


def welcome(user: dict[str, Any]) -> dict[str, Any]:
    at = _millis(user["registered_at"])
    return notification(user["user_id"], "welcome", user["email"], at, None)


def notifier(hold_max: int) -> Callable[[dict[str, Any], State], list[dict[str, Any]]]:
    """The rule over registrations and orders of one user: a registration (it has an email)
    sets the address, asks for the welcome and releases the held orders in their order; an
    order is confirmed at the address, or held while there is none (at most ``hold_max``)."""

    def notify(value: dict[str, Any], state: State) -> list[dict[str, Any]]:
        if "email" in value:
            user, address = value["user_id"], value["email"]
            state.set("address", address)
            out = [welcome(value)]
            held: list[list[Any]] = state.get("held", [])
            if held:
                state.delete("held")
                out += [notification(user, "order_confirmed", address, at, o) for o, at in held]
            return out
        user, order_id, at = value["user_id"], value["order_id"], _millis(value["created_at"])
        address = state.get("address")
        if address is not None:
            return [notification(user, "order_confirmed", address, at, order_id)]
        held = state.get("held", [])
        if len(held) >= hold_max:
            logging.warning("%s: %d orders held already, %s dropped", user, hold_max, order_id)
            return []
        state.set("held", [*held, [order_id, at]])
        return []

    return notify


def main() -> None:
    parser = arguments(__doc__.split("\n", 1)[0])
    parser.add_argument("--registrations", required=True, help="the user_registered topic")
    parser.add_argument(
        "--no-confirmations",
        dest="confirm",
        action="store_false",
        help="welcomes only, as the pipeline before issue 28's join",
    )
    parser.add_argument(
        "--hold-max", type=int, default=1000, help="orders held per user (as the pipeline's)"
    )
    args = parser.parse_args()

    avro = Avro(args)
    app = application(args)
    orders_topic = app.topic(
        args.input, key_deserializer="str", value_deserializer=avro.deserializer()
    )
    registrations_topic = app.topic(
        args.registrations, key_deserializer="str", value_deserializer=avro.deserializer()
    )
    stats_topic = app.topic(
        f"{args.output_prefix}user_order_stats",
        key_serializer="str",
        value_serializer=avro.serializer("UserOrderStats.avsc"),
    )
    levels_topic = app.topic(
        f"{args.output_prefix}stock_levels",
        key_serializer="str",
        value_serializer=avro.serializer("StockLevel.avsc"),
    )
    notifications_topic = app.topic(
        f"{args.output_prefix}notifications",
        key_serializer="str",
        value_serializer=avro.serializer("NotificationRequested.avsc"),
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
    registrations = app.dataframe(registrations_topic)
    if args.confirm:
        users = registrations.concat(orders)
        users.apply(notifier(args.hold_max), stateful=True, expand=True).to_topic(
            notifications_topic
        )
    else:
        registrations.apply(welcome).to_topic(notifications_topic)
    app.run()


if __name__ == "__main__":
    main()
