"""``pipeline demo``: the whole pipeline end to end on the local stack, with its results shown.

Registers the schemas, starts two workers (separate ``faust worker`` processes), feeds a
realistic stream from the load generator, waits until the workers have consumed all of it, and
then shows what a user would look at: table views asked through both workers, the derived
topics read ``read_committed`` and tallied against the stream that was sent (records,
duplicates, missing: pipeline.dev.audit), dead letters, and a check of the tables against that
stream. ``--guarantee`` chooses the workers' processing guarantee: under exactly_once no derived
event may be there twice, under either none may be missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import click
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from pipeline.dev import expected
from pipeline.dev.audit import decoded, derived_tallies, failures, read_topic
from pipeline.dev.loadgen import LoadConfig, ShopEvent, generate, send
from pipeline.dev.stack.config import free_ports
from pipeline.dev.workers import ANALYTICS_APP, POINTS_APP, WorkerFailed, WorkerProcess
from pipeline.kafka.offsets import lag_by_partition, record_count
from pipeline.serde.codec import Codecs
from pipeline.services import (
    analytics_settings,
    loyalty_points,
    order_analytics,
    points_settings,
    shop,
)
from pipeline.settings import PROCESSING_GUARANTEES, Settings
from pipeline.streaming.topology import Topology
from pipeline.topics import TopicNames

BIN = Path(sys.executable).parent  # the venv's scripts: `pipeline`
SKIPPED = "    skipped: the topics held events of an earlier run before this one"


def step(text: str) -> None:
    click.secho(f"\n==> {text}", bold=True)


def wait_caught_up(service: Topology, timeout: float = 600.0) -> None:
    """Until the service's consumer group has committed every message of every topic it
    reads (the order-line repartition topic included), twice in a row. Read
    ``read_committed``: under exactly_once a partition's last offset may be a commit marker,
    which the group never commits past."""
    settings = service.settings
    admin = AdminClient(dict(settings.kafka_client_config()))
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": "pipeline-demo-lag",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
        }
    )
    deadline = time.monotonic() + timeout
    quiet = 0
    try:
        while time.monotonic() < deadline:
            lag = lag_by_partition(admin, consumer, settings.app_id, service.sources)
            behind = sum(end - done for done, end in lag.values())
            quiet = quiet + 1 if behind == 0 else 0
            if quiet >= 2:
                return
            click.echo(f"\r    {behind:>8} messages still to process", nl=False)
            time.sleep(1.0)
    finally:
        consumer.close()
        click.echo()
    raise click.ClickException(f"the workers did not catch up within {timeout:.0f} s")


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


def show_confirmations(
    settings: Settings, events: list[ShopEvent], workers: list[WorkerProcess]
) -> None:
    """The order confirmations (a join): how many orders waited for their user's
    registration, and one such user's confirmations as they were emitted."""
    step("order confirmations (a join of orders with registrations)")
    names = TopicNames.from_settings(settings)
    codecs = Codecs.from_settings(settings)
    codecs.prepare([names.notifications])
    notes = decoded(codecs, names.notifications, read_topic(settings, names.notifications))
    confirmed = [note for note in notes if note["template"] == "order_confirmed"]
    late = expected.ordered_before_registering(events)
    orders = sum(user.order_count for user in expected.user_stats(events).values())
    held, released = (
        sum(
            w.metric("pipeline_join_records_total", join="notifications", outcome=o)
            for w in workers
        )
        for o in ("held", "released")
    )
    click.echo(
        f"    {len(confirmed)} confirmations for {orders} orders. {sum(late.values())} orders "
        f"of {len(late)} users were sent before the user's registration: {held:.0f} were "
        f"processed first, held, and released ({released:.0f}) once it was; the others found "
        "it processed already (the two topics are read side by side)"
    )
    if late:
        user = min(late)
        for note in [note for note in confirmed if note["user_id"] == user][:4]:
            click.echo(
                f"    {user}: {note['order_id']} confirmed at {note['address']}, requested at "
                f"{note['requested_at']:%Y-%m-%d %H:%M:%S}"
            )


def verify_tables(
    worker: WorkerProcess, orders: Mapping[str, int], stock: Mapping[str, int]
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


def verify_derived(settings: Settings, events: list[ShopEvent], guarantee: str) -> None:
    """Every derived topic read ``read_committed`` and tallied against ``events``;
    ClickException when one breaks ``guarantee`` (pipeline.dev.audit.failures)."""
    tallies = derived_tallies(settings, events)
    width = max(map(len, tallies))
    for topic, tally in tallies.items():
        click.echo(f"    {topic:<{width}}  {tally} (read_committed)")
    broken = failures(tallies, guarantee)
    if broken:
        raise click.ClickException(
            f"derived topics not as {guarantee} promises: {', '.join(broken)}"
        )


def start_service(
    label: str,
    app: str,
    env: Mapping[str, str],
    root: Path,
    workers: list[WorkerProcess],
    service: Topology,
) -> WorkerProcess:
    """Start a worker of ``service`` (the Faust app module ``app``; added to ``workers``)
    and wait until its consumer group has read its topics from the beginning."""
    (port,) = free_ports(1)
    worker = WorkerProcess(label, env, root / label, port, root / f"{label}.log", app=app)
    workers.append(worker)
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_healthy()
    except WorkerFailed as failure:
        raise click.ClickException(str(failure)) from None
    wait_caught_up(service)
    click.echo(
        f"    {worker.label} ({service.settings.app_id}) read order_created from the beginning "
        f"in {time.monotonic() - started:.1f} s, start-up included"
    )
    return worker


def add_points_service(
    settings: Settings,
    env: Mapping[str, str],
    root: Path,
    events: list[ShopEvent],
    fresh: bool,
    workers: list[WorkerProcess],
) -> None:
    """Start the loyalty-points service after the fact (added to ``workers``): a consumer
    group of its own that reads order_created from the beginning, while the shop pipeline
    runs on unchanged."""
    step("adding the loyalty-points service: its own app and consumer group, started now")
    service = loyalty_points(points_settings(settings))
    worker = start_service("points-1", POINTS_APP, env, root, workers, service)
    points = expected.points(events)
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


# The analytics service's grace in the demo: the stream's hour of event time, pre-loaded
# and read partition by partition, would otherwise reach the SKU windows late
# (docs/windows.md, "Stream time").
DEMO_ANALYTICS_GRACE_MS = 2 * 3_600_000


def add_analytics_service(
    settings: Settings,
    env: Mapping[str, str],
    root: Path,
    events: list[ShopEvent],
    fresh: bool,
    workers: list[WorkerProcess],
) -> None:
    """Start the analytics service (added to ``workers``): its own consumer group, reading
    order_created from the beginning; show a few SKUs' hours and a user's day."""
    step("adding the analytics service: windows in event time, its own app and consumer group")
    analytics_env = {**env, "PIPELINE_ANALYTICS_GRACE_MS": str(DEMO_ANALYTICS_GRACE_MS)}
    service = order_analytics(
        replace(analytics_settings(settings), analytics_grace_ms=DEMO_ANALYTICS_GRACE_MS)
    )
    worker = start_service("analytics-1", ANALYTICS_APP, analytics_env, root, workers, service)
    click.echo(f"    grace {DEMO_ANALYTICS_GRACE_MS // 60_000} min for this pre-loaded stream")
    units = expected.units_by_sku(events)
    for sku in sorted(units)[:2]:
        status, body = worker.get(f"/skus/{sku}/sales")
        for window in body.get("windows", [])[:2] if status == 200 else []:
            click.echo(f"    GET /skus/{sku}/sales  {json.dumps(window)}")
    user = sorted(expected.user_stats(events))[0]
    status, body = worker.get(f"/users/{user}/spend")
    windows = body.get("windows", []) if status == 200 else []
    click.echo(f"    GET /users/{user}/spend  {len(windows)} windows of a day, the first:")
    if windows:
        click.echo(f"        {json.dumps(windows[0])}")
    if fresh:
        right = sum(
            1
            for sku, sold in units.items()
            if sum(w["units"] for w in worker.get(f"/skus/{sku}/sales")[1].get("windows", []))
            == sold
        )
        late = sum(s.value for s in worker.samples() if s.name == "pipeline_late_events_total")
        click.echo(
            f"    SKUs whose hours add up to the units sold: {right}/{len(units)}; "
            f"late events: {late:.0f}"
        )
        if right != len(units):
            raise click.ClickException("the SKU sales do not match the input")


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
@click.option(
    "--guarantee",
    type=click.Choice(PROCESSING_GUARANTEES),
    default=lambda: os.environ.get("PIPELINE_PROCESSING_GUARANTEE", "at_least_once"),
    show_default="PIPELINE_PROCESSING_GUARANTEE, else at_least_once",
    help="The workers' processing guarantee.",
)
@click.option("--keep-running", is_flag=True, help="Leave the workers running at the end.")
def demo(
    users: int, orders: int, skus: int, rate: float, guarantee: str, keep_running: bool
) -> None:
    """Run the pipeline end to end on the local stack and show its results."""
    # The workers read the stack's settings themselves; this one is theirs to override.
    env = {**os.environ, "PIPELINE_PROCESSING_GUARANTEE": guarantee}
    settings = replace(Settings.from_env(), processing_guarantee=guarantee)
    names = TopicNames.from_settings(settings)
    root = settings.data_dir / "demo"
    # Table state of an earlier demo may belong to a stack that no longer exists.
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    step("registering the schemas")
    subprocess.run([str(BIN / "pipeline"), "schemas", "register"], check=True)

    step(f"starting two workers ({guarantee})")
    workers = [
        WorkerProcess(f"worker-{n}", env, root / f"worker-{n}", port, root / f"worker-{n}.log")
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

        # Every tenth user orders before registering: their confirmations wait for it.
        config = LoadConfig(users=users, orders=orders, skus=skus, late_registration_every=10)
        events = list(generate(config))
        consumer = Consumer({**settings.kafka_client_config(), "group.id": "pipeline-demo"})
        fresh = record_count(consumer, names.order_created) == 0
        consumer.close()
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

        expected_orders = {user: s.order_count for user, s in expected.user_stats(events).items()}
        expected_stock = expected.stock(events)
        show_views(workers, sorted(expected_orders)[:3], sorted(expected_stock)[:3])
        status, body = workers[0].get("/stock/NO-SUCH-SKU")
        click.echo(f"    GET {'/stock/NO-SUCH-SKU':<28} {status} {json.dumps(body)}")

        step("derived topics, read read_committed, against the stream that was sent")
        if fresh:
            verify_derived(settings, events, guarantee)
        else:
            click.echo(SKIPPED)
        step("dead letters (read_committed)")
        for topic in (names.user_registered, names.order_created, names.stock_adjusted):
            dlq = names.dead_letters(topic)
            click.echo(f"    {dlq:<24} {len(read_topic(settings, dlq)):>8} dead letters")

        step("tables against the stream that was sent")
        if fresh:
            users_ok, skus_ok = verify_tables(workers[1], expected_orders, expected_stock)
            click.echo(f"    users with the right order count: {users_ok}/{len(expected_orders)}")
            click.echo(f"    SKUs with the right stock:        {skus_ok}/{len(expected_stock)}")
            if users_ok != len(expected_orders) or skus_ok != len(expected_stock):
                raise click.ClickException("the tables do not match the input")
        else:
            click.echo(SKIPPED)

        if fresh:
            show_confirmations(settings, events, workers)
        add_points_service(settings, env, root, events, fresh, workers)
        add_analytics_service(settings, env, root, events, fresh, workers)
    finally:
        if keep_running:
            for worker in workers:
                if worker.process is not None:
                    click.echo(f"    {worker.label} runs on as pid {worker.pid}")
        else:
            step("stopping the workers")
            for worker in workers:
                worker.stop()
