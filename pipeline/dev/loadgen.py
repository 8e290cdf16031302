"""A realistic stream of shop events for demos, benchmarks and tests.

Users register, place orders of one to four lines, and the warehouse restocks
(and now and then writes items off). The stream is a pure function of its
configuration and seed, so a test can generate the same events, send them, and
compute what the tables must hold on its own.

Every order id carries the user's order sequence (``<user_id>-o00007``), which is
how tests check that one user's orders were applied in the order they were sent.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import click
from confluent_kafka import Producer
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.kafka.clients import LIBRDKAFKA_LOGGER, logging_to_python
from pipeline.preflight import check
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.streaming.producer import producer_config
from pipeline.topics import TopicNames

# The contract's topic names, without a deployment prefix: what ``ShopEvent.stream``
# holds. The app id names only internal topics, which no event goes to.
CONTRACT = TopicNames(prefix="", app_id="")


@dataclass(frozen=True)
class LoadConfig:
    users: int = 200
    orders: int = 2000
    skus: int = 50
    # One warehouse adjustment after every this many orders.
    restock_every: int = 10
    seed: int = 1
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    # Every this many new users places a first order before registering (0: none does):
    # their registration follows LATE_BY_ORDERS orders later, and the confirmations of
    # their orders wait for it.
    late_registration_every: int = 0


LATE_BY_ORDERS = 5


@dataclass(frozen=True)
class ShopEvent:
    """``stream`` is the contract topic name (without any deployment prefix)."""

    stream: str
    key: str
    record: dict[str, Any]


def user_id(index: int) -> str:
    return f"user-{index:05d}"


def sku(index: int) -> str:
    return f"SKU-{index:04d}"


def generate(config: LoadConfig) -> Iterator[ShopEvent]:
    """Initial stock for every SKU, then registrations, orders and adjustments interleaved."""
    rng = random.Random(config.seed)
    clock = config.start_ms
    skus = [sku(index) for index in range(config.skus)]
    prices = {name: rng.randrange(99, 20_000) for name in skus}
    registered: list[str] = []
    order_counts: Counter[str] = Counter()

    def tick() -> int:
        nonlocal clock
        clock += rng.randrange(1, 2_000)
        return clock

    for name in skus:
        yield adjustment(name, rng.randrange(20, 200), "initial stock", tick())
    late: dict[str, int] = {}  # user → the order number their registration waits for
    for number in range(config.orders):
        for waited in [user for user, due in late.items() if due <= number]:
            del late[waited]
            yield registration(waited, tick())
        # A new user registers now and then (before their first order, unless late).
        wants_new_user = not registered or rng.random() < config.users / max(config.orders, 1)
        unregistered_buyer = None
        if len(registered) < config.users and wants_new_user:
            new_user = user_id(len(registered))
            registered.append(new_user)
            every = config.late_registration_every
            if every and len(registered) % every == 0:
                late[new_user] = number + LATE_BY_ORDERS
                unregistered_buyer = new_user
            else:
                yield registration(new_user, tick())
        buyer = unregistered_buyer or rng.choice(registered)
        order_counts[buyer] += 1
        lines = [
            {"sku": item, "quantity": rng.randrange(1, 5), "unit_price_cents": prices[item]}
            for item in rng.sample(skus, rng.randrange(1, min(4, len(skus)) + 1))
        ]
        yield order(buyer, f"{buyer}-o{order_counts[buyer]:05d}", lines, tick())
        if config.restock_every and (number + 1) % config.restock_every == 0:
            if rng.random() < 0.8:
                yield adjustment(rng.choice(skus), rng.randrange(20, 150), "restock", tick())
            else:
                yield adjustment(rng.choice(skus), -rng.randrange(1, 6), "write-off", tick())
    for waited in late:
        yield registration(waited, tick())
    while len(registered) < config.users:
        new_user = user_id(len(registered))
        registered.append(new_user)
        yield registration(new_user, tick())


def registration(user: str, at_ms: int) -> ShopEvent:
    return ShopEvent(
        CONTRACT.user_registered,
        user,
        {
            "user_id": user,
            "email": f"{user}@shop.example",
            "name": user.replace("-", " ").title(),
            "registered_at": at_ms,
        },
    )


def order(user: str, order_id: str, lines: list[dict[str, Any]], at_ms: int) -> ShopEvent:
    total = sum(line["quantity"] * line["unit_price_cents"] for line in lines)
    return ShopEvent(
        CONTRACT.order_created,
        user,
        {
            "order_id": order_id,
            "user_id": user,
            "items": lines,
            "total_cents": total,
            "created_at": at_ms,
        },
    )


def adjustment(item: str, delta: int, reason: str, at_ms: int) -> ShopEvent:
    return ShopEvent(
        CONTRACT.stock_adjusted,
        item,
        {"sku": item, "delta": delta, "reason": reason, "adjusted_at": at_ms},
    )


def deployed_topics(names: TopicNames) -> dict[str, str]:
    """Each ``ShopEvent.stream`` and its topic in the deployment ``names`` describes."""
    return {
        CONTRACT.user_registered: names.user_registered,
        CONTRACT.order_created: names.order_created,
        CONTRACT.stock_adjusted: names.stock_adjusted,
    }


@dataclass
class SendReport:
    sent: Counter[str]
    failed: int
    seconds: float


def send(
    events: Iterable[ShopEvent],
    settings: Settings,
    *,
    rate: float = 0.0,
    total: int | None = None,
    progress: bool = True,
) -> SendReport:
    """Encode and produce ``events`` in order, at most ``rate`` per second (0: no limit),
    and wait until the broker acknowledged every one."""
    codecs = Codecs.from_settings(settings)
    codecs.prepare()
    topics = deployed_topics(TopicNames.from_settings(settings))
    producer = Producer(logging_to_python(producer_config(settings)))
    sent: Counter[str] = Counter()
    failures: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    started = time.monotonic()
    # librdkafka's log lines, served by poll() below, are printed above the bar, not through it.
    with (
        logging_redirect_tqdm(loggers=[LIBRDKAFKA_LOGGER]),
        tqdm(total=total, unit="ev", disable=not progress) as bar,
    ):
        for count, event in enumerate(events, start=1):
            topic = topics[event.stream]
            value = codecs.encode(topic, event.record)
            while True:
                try:
                    producer.produce(
                        topic, key=event.key.encode(), value=value, on_delivery=delivered
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    producer.poll(0.1)
            producer.poll(0)
            sent[event.stream] += 1
            bar.update()
            if rate > 0:
                ahead = count / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    return SendReport(sent=sent, failed=len(failures), seconds=time.monotonic() - started)


@click.command()
@click.option("--users", type=click.IntRange(1), default=200, show_default=True)
@click.option("--orders", type=click.IntRange(0), default=2000, show_default=True)
@click.option("--skus", type=click.IntRange(1), default=50, show_default=True)
@click.option(
    "--restock-every",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="One stock adjustment after every N orders (0: only the initial stock).",
)
@click.option(
    "--rate",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Events per second (0: as fast as the broker takes them).",
)
@click.option("--seed", type=int, default=1, show_default=True)
def loadgen(users: int, orders: int, skus: int, restock_every: int, rate: float, seed: int) -> None:
    """Produce a realistic stream: registrations, multi-line orders, restocks."""
    config = LoadConfig(
        users=users, orders=orders, skus=skus, restock_every=restock_every, seed=seed
    )
    total = sum(1 for _ in generate(config))
    report = send(generate(config), check(Settings.from_env()), rate=rate, total=total)
    for stream, count in sorted(report.sent.items()):
        click.echo(f"{stream:<16} {count:>8}")
    click.echo(
        f"{sum(report.sent.values())} events in {report.seconds:.1f} s, {report.failed} failed"
    )
    if report.failed:
        raise SystemExit(1)
