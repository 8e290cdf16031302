"""``pipeline demo``: the whole pipeline end to end on the local stack, with its results shown.

Registers the schemas, starts two workers (separate ``faust worker`` processes), feeds a
realistic stream from the load generator, waits until the workers have consumed all of it, and
then shows what a user would look at: table views asked through both workers, the derived
topics' counts, dead letters, and a check of the tables against the stream that was sent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import click
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from pipeline.admin.offsets import group_lag, record_count
from pipeline.dev.loadgen import (
    CONTRACT,
    LoadConfig,
    ShopEvent,
    generate,
    send,
)
from pipeline.dev.stack.config import free_ports
from pipeline.dev.workers import POINTS_APP, WorkerFailed, WorkerProcess
from pipeline.services import loyalty_points, points_settings, shop
from pipeline.settings import Settings
from pipeline.streaming.topology import Topology
from pipeline.topics import TopicNames

BIN = Path(sys.executable).parent  # the venv's scripts: `pipeline`


def step(text: str) -> None:
    click.secho(f"\n==> {text}", bold=True)


def wait_caught_up(service: Topology, timeout: float = 600.0) -> None:
    """Until the service's consumer group has committed every message of every topic it
    reads (the order-line repartition topic included), twice in a row."""
    settings = service.settings
    admin = AdminClient(dict(settings.kafka_client_config()))
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "pipeline-demo-lag"})
    deadline = time.monotonic() + timeout
    quiet = 0
    try:
        while time.monotonic() < deadline:
            behind = group_lag(admin, consumer, settings.app_id, service.sources)
            quiet = quiet + 1 if behind == 0 else 0
            if quiet >= 2:
                return
            click.echo(f"\r    {behind:>8} messages still to process", nl=False)
            time.sleep(1.0)
    finally:
        consumer.close()
        click.echo()
    raise click.ClickException(f"the workers did not catch up within {timeout:.0f} s")


def expected_state(events: list[ShopEvent]) -> tuple[Counter[str], Counter[str]]:
    """Orders per user and stock per SKU, counted straight from the events that were sent."""
    orders: Counter[str] = Counter()
    stock: Counter[str] = Counter()
    for event in events:
        if event.stream == CONTRACT.order_created:
            orders[event.key] += 1
            for item in event.record["items"]:
                stock[item["sku"]] -= item["quantity"]
        elif event.stream == CONTRACT.stock_adjusted:
            stock[event.key] += event.record["delta"]
    return orders, stock


def expected_points(events: list[ShopEvent]) -> Counter[str]:
    """Points per user: one per whole currency unit of each order's total."""
    points: Counter[str] = Counter()
    for event in events:
        if event.stream == CONTRACT.order_created:
            points[event.key] += event.record["total_cents"] // 100
    return points


def show_views(workers: list[WorkerProcess], users: list[str], skus: list[str]) -> None:
    step("table views, each asked through every worker (keys owned elsewhere are routed)")
    for path in [f"/users/{user}/orders" for user in users] + [f"/stock/{sku}" for sku in skus]:
        answers = [worker.get(path) for worker in workers]
        agree = (
            "same answer"
            if len({json.dumps(a, sort_keys=True) for a in answers}) == 1
            else ("ANSWERS DIFFER")
        )
        status, body = answers[0]
        click.echo(f"    GET {path:<28} {status} {json.dumps(body)}  ({agree})")


def verify_tables(
    worker: WorkerProcess, orders: Counter[str], stock: Counter[str]
) -> tuple[int, int]:
    """How many users and SKUs the views report exactly as computed from the input."""
    users_ok = sum(
        1
        for user, count in orders.items()
        if worker.get(f"/users/{user}/orders")[1].get("order_count") == count
    )
    skus_ok = sum(
        1
        for sku, available in stock.items()
        if worker.get(f"/stock/{sku}")[1].get("available") == available
    )
    return users_ok, skus_ok


def add_points_service(
    settings: Settings,
    root: Path,
    events: list[ShopEvent],
    fresh: bool,
    workers: list[WorkerProcess],
) -> None:
    """Start the loyalty-points service after the fact (added to ``workers``): a consumer
    group of its own that reads order_created from the beginning, while the shop pipeline
    runs on unchanged."""
    step("adding the loyalty-points service: its own app and consumer group, started now")
    (port,) = free_ports(1)
    worker = WorkerProcess(
        "points-1", os.environ, root / "points-1", port, root / "points-1.log", app=POINTS_APP
    )
    workers.append(worker)
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_healthy()
    except WorkerFailed as failure:
        raise click.ClickException(str(failure)) from None
    service = loyalty_points(points_settings(settings))
    wait_caught_up(service)
    click.echo(
        f"    {worker.label} ({service.settings.app_id}) read order_created from the beginning "
        f"in {time.monotonic() - started:.1f} s, start-up included"
    )
    points = expected_points(events)
    for user in sorted(points)[:3]:
        status, body = worker.get(f"/users/{user}/points")
        click.echo(f"    GET {f'/users/{user}/points':<28} {status} {json.dumps(body)}")
    if fresh:
        right = sum(
            1
            for user, expected in points.items()
            if worker.get(f"/users/{user}/points")[1].get("points") == expected
        )
        click.echo(f"    users with the right points:      {right}/{len(points)}")
        if right != len(points):
            raise click.ClickException("the points do not match the input")


@click.command()
@click.option("--users", type=click.IntRange(1), default=300, show_default=True)
@click.option("--orders", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--skus", type=click.IntRange(1), default=60, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Events per second fed (0: as fast as the broker takes them).",
)
@click.option("--keep-running", is_flag=True, help="Leave the workers running at the end.")
def demo(users: int, orders: int, skus: int, rate: float, keep_running: bool) -> None:
    """Run the pipeline end to end on the local stack and show its results."""
    settings = Settings.from_env()
    names = TopicNames.from_settings(settings)
    root = settings.data_dir / "demo"
    # Table state of an earlier demo may belong to a stack that no longer exists.
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    step("registering the schemas")
    subprocess.run([str(BIN / "pipeline"), "schemas", "register"], check=True)

    step("starting two workers")
    workers = [
        WorkerProcess(
            f"worker-{n}", os.environ, root / f"worker-{n}", port, root / f"worker-{n}.log"
        )
        for n, port in enumerate(free_ports(2), start=1)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            try:
                worker.wait_healthy()
            except WorkerFailed as failure:
                raise click.ClickException(str(failure)) from None
            click.echo(f"    {worker.label}: {worker.url} (log {worker.log})")

        config = LoadConfig(users=users, orders=orders, skus=skus)
        events = list(generate(config))
        consumer = Consumer({**settings.kafka_client_config(), "group.id": "pipeline-demo"})
        fresh = record_count(consumer, names.order_created) == 0
        step(f"feeding {len(events)} events: registrations, orders, restocks")
        started = time.monotonic()
        report = send(events, settings, rate=rate, total=len(events))
        step("waiting for the workers to process everything")
        wait_caught_up(shop(settings))
        seconds = time.monotonic() - started
        click.echo(
            f"    {len(events)} events fed and processed in {seconds:.1f} s "
            f"({len(events) / seconds:,.0f} events/s end to end, 2 workers, "
            f"{os.cpu_count()} cores); {report.failed} sends failed"
        )

        expected_orders, expected_stock = expected_state(events)
        show_views(workers, sorted(expected_orders)[:3], sorted(expected_stock)[:3])
        status, body = workers[0].get("/stock/NO-SUCH-SKU")
        click.echo(f"    GET {'/stock/NO-SUCH-SKU':<28} {status} {json.dumps(body)}")

        step("derived topics and dead letters")
        for topic in (
            names.user_order_stats,
            names.stock_levels,
            names.low_stock_alerts,
            names.notifications,
        ):
            click.echo(f"    {topic:<24} {record_count(consumer, topic):>8} events")
        for topic in (names.user_registered, names.order_created, names.stock_adjusted):
            dlq = names.dead_letters(topic)
            click.echo(f"    {dlq:<24} {record_count(consumer, dlq):>8} dead letters")
        consumer.close()

        step("tables against the stream that was sent")
        if fresh:
            users_ok, skus_ok = verify_tables(workers[1], expected_orders, expected_stock)
            click.echo(f"    users with the right order count: {users_ok}/{len(expected_orders)}")
            click.echo(f"    SKUs with the right stock:        {skus_ok}/{len(expected_stock)}")
            if users_ok != len(expected_orders) or skus_ok != len(expected_stock):
                raise click.ClickException("the tables do not match the input")
        else:
            click.echo("    skipped: the topics held events of an earlier run before this one")

        add_points_service(settings, root, events, fresh, workers)
    finally:
        if keep_running:
            for worker in workers:
                if worker.process is not None:
                    click.echo(f"    {worker.label} runs on as pid {worker.pid}")
        else:
            step("stopping the workers")
            for worker in workers:
                worker.stop()
