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
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline.loadgen import ORDER_CREATED, STOCK_ADJUSTED, LoadConfig, ShopEvent, generate, send
from pipeline.settings import Settings
from pipeline.stack.config import free_ports
from pipeline.stack.launcher import tail
from pipeline.topics import TopicNames

BIN = Path(sys.executable).parent


def step(text: str) -> None:
    click.secho(f"\n==> {text}", bold=True)


@dataclass
class DemoWorker:
    number: int
    port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "faust"), "-A", "pipeline.app", "worker", "-l", "info"],
                env={
                    **env,
                    "PIPELINE_WEB_PORT": str(self.port),
                    "PIPELINE_DATA_DIR": str(self.data_dir),
                },
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo, which stops workers cleanly
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, so Faust commits offsets and closes its RocksDB stores; SIGKILL after 60 s."""
        if self.process is None or not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def get_json(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_healthy(worker: DemoWorker, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not worker.running():
            raise click.ClickException(
                f"worker {worker.number} exited; last lines of {worker.log}:\n{tail(worker.log)}"
            )
        try:
            status, body = get_json(worker.url + "/health")
            # Healthy and holding partitions: the group has settled with this worker in it.
            if status == 200 and body.get("assigned_partitions", 0) > 0:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    raise click.ClickException(
        f"worker {worker.number} not healthy after {timeout:.0f} s; "
        f"last lines of {worker.log}:\n{tail(worker.log)}"
    )


def watermarks(consumer: Consumer, topic: str) -> dict[int, tuple[int, int]]:
    """(low, high) offsets by partition; {} for a topic that does not exist (yet)."""
    metadata = consumer.list_topics(topic, timeout=30).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return {}
    result: dict[int, tuple[int, int]] = {}
    for partition in metadata.partitions:
        for attempt in range(20):
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=30
                )
                break
            except KafkaException as error:
                # A topic the workers just created may not have elected its leaders yet.
                if not error.args[0].retriable() or attempt == 19:
                    raise
                time.sleep(0.5)
        result[partition] = (low, high)
    return result


def message_count(consumer: Consumer, topic: str) -> int:
    return sum(high - low for low, high in watermarks(consumer, topic).values())


def lag(admin: AdminClient, consumer: Consumer, group: str, topics: tuple[str, ...]) -> int:
    """Messages of ``topics`` that ``group`` has not committed yet."""
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    committed = {
        (tp.topic, tp.partition): tp.offset for tp in future.result().topic_partitions or []
    }
    behind = 0
    for topic in topics:
        for partition, (_, end) in watermarks(consumer, topic).items():
            behind += end - max(committed.get((topic, partition), 0), 0)
    return behind


def wait_caught_up(settings: Settings, names: TopicNames, timeout: float = 600.0) -> None:
    """Until the workers' consumer group has committed every message of every input topic
    (the order-line repartition topic included), twice in a row."""
    admin = AdminClient(dict(settings.kafka_client_config()))
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "pipeline-demo-lag"})
    deadline = time.monotonic() + timeout
    quiet = 0
    try:
        while time.monotonic() < deadline:
            behind = lag(admin, consumer, settings.app_id, names.consumed)
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
        if event.stream == ORDER_CREATED:
            orders[event.key] += 1
            for item in event.record["items"]:
                stock[item["sku"]] -= item["quantity"]
        elif event.stream == STOCK_ADJUSTED:
            stock[event.key] += event.record["delta"]
    return orders, stock


def show_views(workers: list[DemoWorker], users: list[str], skus: list[str]) -> None:
    step("table views, each asked through every worker (keys owned elsewhere are routed)")
    for path in [f"/users/{user}/orders" for user in users] + [f"/stock/{sku}" for sku in skus]:
        answers = [get_json(worker.url + path) for worker in workers]
        agree = (
            "same answer"
            if len({json.dumps(a, sort_keys=True) for a in answers}) == 1
            else ("ANSWERS DIFFER")
        )
        status, body = answers[0]
        click.echo(f"    GET {path:<28} {status} {json.dumps(body)}  ({agree})")


def verify_tables(worker: DemoWorker, orders: Counter[str], stock: Counter[str]) -> tuple[int, int]:
    """How many users and SKUs the views report exactly as computed from the input."""
    users_ok = sum(
        1
        for user, count in orders.items()
        if get_json(f"{worker.url}/users/{user}/orders")[1].get("order_count") == count
    )
    skus_ok = sum(
        1
        for sku, available in stock.items()
        if get_json(f"{worker.url}/stock/{sku}")[1].get("available") == available
    )
    return users_ok, skus_ok


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
    env = dict(os.environ)
    workers = [
        DemoWorker(n, port, root / f"worker-{n}", root / f"worker-{n}.log")
        for n, port in enumerate(free_ports(2), start=1)
    ]
    try:
        for worker in workers:
            worker.start(env)
        for worker in workers:
            wait_healthy(worker)
            click.echo(f"    worker {worker.number}: {worker.url} (log {worker.log})")

        config = LoadConfig(users=users, orders=orders, skus=skus)
        events = list(generate(config))
        consumer = Consumer({**settings.kafka_client_config(), "group.id": "pipeline-demo"})
        fresh = message_count(consumer, names.order_created) == 0
        step(f"feeding {len(events)} events: registrations, orders, restocks")
        started = time.monotonic()
        report = send(events, settings, rate=rate, total=len(events))
        step("waiting for the workers to process everything")
        wait_caught_up(settings, names)
        seconds = time.monotonic() - started
        click.echo(
            f"    {len(events)} events fed and processed in {seconds:.1f} s "
            f"({len(events) / seconds:,.0f} events/s end to end, 2 workers, "
            f"{os.cpu_count()} cores); {report.failed} sends failed"
        )

        expected_orders, expected_stock = expected_state(events)
        show_views(workers, sorted(expected_orders)[:3], sorted(expected_stock)[:3])
        status, body = get_json(workers[0].url + "/stock/NO-SUCH-SKU")
        click.echo(f"    GET {'/stock/NO-SUCH-SKU':<28} {status} {json.dumps(body)}")

        step("derived topics and dead letters")
        for topic in (
            names.user_order_stats,
            names.stock_levels,
            names.low_stock_alerts,
            names.notifications,
        ):
            click.echo(f"    {topic:<24} {message_count(consumer, topic):>8} events")
        for topic in (names.user_registered, names.order_created, names.stock_adjusted):
            dlq = names.dead_letters(topic)
            click.echo(f"    {dlq:<24} {message_count(consumer, dlq):>8} dead letters")
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
    finally:
        if keep_running:
            for worker in workers:
                if worker.process is not None:
                    click.echo(f"    worker {worker.number} runs on as pid {worker.process.pid}")
        else:
            step("stopping the workers")
            for worker in workers:
                worker.stop()
