"""Windowed throughput (part 9): the analytics service (``pipeline.analytics_app``) against
the same two windowed aggregations written with Quix Streams (bench/peers/quix_analytics.py),
over one pre-loaded input with hours of event time.

The input is ``--orders`` orders whose created_at advance evenly over ``SPAN_HOURS`` hours
that ended a few hours ago, then *closing orders*: one line of every SKU, stamped past the
last hour's end + grace, so that every hour of the orders closes in both systems (the
closing orders' own hours stay open). The finals expected are then the input's own (SKU,
hour) pairs (``hourly_totals``), and each run's ``sku_sales_hourly`` is read back and
checked against them: the same count, units, revenue and orders, so both did the same work.

Every topic has one partition. Stream time is per partition, and a backlog of hours of
event time read from several partitions, re-keyed, puts one downstream partition's stream
time hours ahead of records still to come from the others (../shared/TRAPS.md, "Event time
and windows"): which records were late would depend on each system's fetch order, not on
its windows. With one partition the event time each system sees only grows, no record is
late, and both close the same windows at the same records.

The time runs, as in bench.throughput, from the first derived record (on the system's
repartition topic) to the last final; the analytics worker starts on an empty topic of its
own and the input is copied in once its group has settled. Systems run interleaved.

The store run (``measure_store``, pipeline only, untimed) shows the store staying flat:
as many orders over ``STORE_SPAN_HOURS``, fed to a worker in two halves of event time, the
worker stopped after each and its RocksDB stores' keys counted, then the closing orders for
the finals check; once with the windows kept ``STORE_RETENTION_MS``, once with the default
retention (nothing expires).
"""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Options, Rdict

from bench import quix_env
from bench.common import (
    BENCH_DIR,
    Offsets,
    Row,
    base_env,
    bulk_producer,
    copy_topic,
    cores,
    cpu_seconds,
    median,
    order_stream,
    peak_rss_bytes,
    produce_all,
    run_id,
    spread,
    stop_process,
    wait_stable_group,
    watch_outputs,
)
from pipeline.dev.audit import decoded, read_topic
from pipeline.dev.loadgen import order, user_id
from pipeline.dev.workers import ANALYTICS_APP, Deployment, WorkerProcess, wait_for
from pipeline.kafka.topics import admin_client, ensure_topics
from pipeline.serde.codec import Codecs
from pipeline.services import analytics_settings, order_analytics, shop
from pipeline.settings import Settings
from pipeline.topics import TopicNames

PART = "9 windowed"
PIPELINE = "analytics x1"
QUIX = "quix analytics"
SYSTEMS = (PIPELINE, QUIX)
HOUR_MS = 3_600_000
# Hours of event time the orders span; they end about two hours before the run, so every
# record (its Kafka timestamp on the repartition and finals topics is its event time) is
# inside the local stack's 24-hour topic retention.
SPAN_HOURS = 18
# The analytics service's default grace (pipeline.settings), given to both systems.
GRACE_MS = Settings.analytics_grace_ms
# Orders pre-loaded by default: 20 s or more of the slower system's work here.
DEFAULT_ORDERS = 40_000
SALES_BY_SKU = "sales_by_sku"  # the repartition topic's name in both systems
TABLES = ("sku_sales", "user_spend")  # the analytics service's windowed tables
# The store run: its retention, the least whole hours past the sliding day's size + grace
# (so both tables expire windows), and a span whose half is past that, measured at its half
# and its end. The broker keeps records of any age (no time-based topic retention).
STORE_RETENTION_MS = 25 * HOUR_MS
STORE_SPAN_HOURS = 54


@dataclass(frozen=True)
class Totals:
    """Hour windows of SKU sales summed: how many, and their units, revenue and orders."""

    windows: int
    units: int
    revenue_cents: int
    orders: int


def hourly_totals(orders: Iterable[dict[str, Any]], hour_ms: int = HOUR_MS) -> Totals:
    """What the finals of ``orders``' (SKU, hour) windows add up to: an order counts once
    in each of its SKUs' hours (its lines of one SKU summed)."""
    windows: set[tuple[str, int]] = set()
    units = revenue = sales = 0
    for record in orders:
        hour = record["created_at"] // hour_ms
        skus = set()
        for item in record["items"]:
            skus.add(item["sku"])
            units += item["quantity"]
            revenue += item["quantity"] * item["unit_price_cents"]
        windows.update((sku, hour) for sku in skus)
        sales += len(skus)
    return Totals(len(windows), units, revenue, sales)


def finals_totals(finals: Iterable[dict[str, Any]]) -> Totals:
    """The same sums over ``shop.SkuSales`` finals as read back."""
    rows = list(finals)
    return Totals(
        len(rows),
        sum(row["units"] for row in rows),
        sum(row["revenue_cents"] for row in rows),
        sum(row["orders"] for row in rows),
    )


def closing_orders(skus: int, at_ms: int) -> Iterator[dict[str, Any]]:
    """Orders of one unit of every SKU (four SKUs each), all at ``at_ms``."""
    for first in range(0, skus, 4):
        lines = [
            {"sku": f"SKU-{i:06d}", "quantity": 1, "unit_price_cents": 100}
            for i in range(first, min(first + 4, skus))
        ]
        yield order(user_id(0), f"closing-{first:06d}", lines, at_ms).record


def event_times(now_ms: int, grace_ms: int, span_hours: int = SPAN_HOURS) -> tuple[int, int]:
    """Where the orders' event time starts (on an hour) and the closing orders' instant:
    one minute past the last hour's end + grace, an hour or more before ``now_ms``."""
    start = (now_ms // HOUR_MS - span_hours - 2) * HOUR_MS - (grace_ms // HOUR_MS) * HOUR_MS
    return start, start + span_hours * HOUR_MS + grace_ms + 60_000


def one_partition(
    name: str, root: Path, retention_ms: int = Settings.analytics_retention_ms
) -> Deployment:
    """A deployment whose topics have one partition (see the module docstring)."""
    return Deployment(
        name=name,
        root=root,
        base_env=base_env(),
        extra_env={
            "PIPELINE_PARTITIONS": "1",
            "PIPELINE_ANALYTICS_GRACE_MS": str(GRACE_MS),
            "PIPELINE_ANALYTICS_RETENTION_MS": str(retention_ms),
        },
    )


def prepare(deployment: Deployment) -> Codecs:
    """The shop's and the analytics service's topics, and the schemas."""
    settings = deployment.settings
    ensure_topics(settings, shop(settings).specs())
    ensure_topics(settings, order_analytics(analytics_settings(settings)).specs())
    codecs = Codecs.from_settings(settings)
    codecs.prepare()
    return codecs


@dataclass
class Input:
    deployment: Deployment
    orders: int  # closing orders included
    lines: int  # sales re-keyed by SKU, one per distinct SKU of an order
    expected: Totals
    seconds: float

    def timeout(self) -> float:
        return max(180.0, self.orders / 100)


def orders_over(
    span_hours: int, count: int, users: int, skus: int
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], Totals]:
    """Where the span starts, ``count`` orders evenly over it, the closing orders, and the
    finals expected of them."""
    start, closing_at = event_times(int(time.time() * 1000), GRACE_MS, span_hours)
    step = span_hours * HOUR_MS / (count + 1)  # the last order before the span's end
    records = [
        record for _, record in order_stream(count, users, skus, start_ms=start, step_ms=step)
    ]
    expected = hourly_totals(records)
    return start, records, list(closing_orders(skus, closing_at)), expected


def sales(records: Iterable[dict[str, Any]]) -> int:
    """The re-keyed sales of ``records``: one per distinct SKU of an order."""
    return sum(len({item["sku"] for item in record["items"]}) for record in records)


def load(deployment: Deployment, codecs: Codecs, records: Iterable[dict[str, Any]]) -> int:
    """``records`` produced to the deployment's ``order_created``; how many."""
    topic = deployment.names.order_created
    return produce_all(
        bulk_producer(deployment.settings),
        topic,
        ((record["user_id"].encode(), codecs[topic].encode(record)) for record in records),
    )


def make_input(root: Path, count: int, users: int, skus: int) -> Input:
    deployment = one_partition(f"bench-{run_id()}", root / f"windowed-input-{count}")
    codecs = prepare(deployment)
    _, records, closing, expected = orders_over(SPAN_HOURS, count, users, skus)
    records += closing
    started = time.monotonic()
    load(deployment, codecs, records)
    return Input(deployment, len(records), sales(records), expected, time.monotonic() - started)


def read_finals(deployment: Deployment) -> Totals:
    settings = deployment.settings
    topic = deployment.names.sku_sales_hourly
    codecs = Codecs.from_settings(settings)
    codecs.prepare([topic])
    return finals_totals(decoded(codecs, topic, read_topic(settings, topic)))


def check(system: str, expected: Totals, got: Totals) -> None:
    if got != expected:
        raise RuntimeError(f"{system}: finals {got}, expected {expected} from the input")


def run_pipeline(source: Input, label: str) -> float:
    """One analytics worker over a copy of the input; the seconds from the first re-keyed
    sale to the last final, once the finals are checked."""
    deployment = one_partition(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(deployment)
    names = deployment.names
    group = analytics_settings(deployment.settings).app_id
    internal = TopicNames.from_settings(analytics_settings(deployment.settings))
    repartition = internal.internal(SALES_BY_SKU)
    # The first derived record: the first re-keyed sale or window changelog record.
    changelogs = {internal.changelog(table): 1 for table in ("sku_sales", "user_spend")}
    expected = {
        repartition: source.lines,
        **changelogs,
        names.sku_sales_hourly: source.expected.windows,
    }
    offsets = Offsets(deployment.settings)
    worker = deployment.worker("analytics", app=ANALYTICS_APP).start()
    try:
        wait_stable_group([worker])
        start = offsets.ends(expected)
        before = cpu_seconds(worker.pid)
        copy_topic(deployment.settings, source.deployment.names.order_created, names.order_created)
        window = watch_outputs(
            offsets, expected, source.timeout(), alive=worker.running, start=start
        )
        used = cpu_seconds(worker.pid) - before
        print(
            f"  {deployment.name}: CPU {used:.1f} s while processing, "
            f"{used / source.orders * 1e6:,.0f} us/order, "
            f"peak RSS {peak_rss_bytes(worker.pid) / 1024**2:,.0f} MiB",
            flush=True,
        )
        wait_for(
            f"{group} to commit {names.order_created}",
            lambda: offsets.committed(group, names.order_created) >= source.orders,
            timeout=60,
            interval=0.5,
        )
    finally:
        worker.stop()
        offsets.close()
    check(PIPELINE, source.expected, read_finals(deployment))
    return window.seconds


def start_quix(source: Input, out: Deployment) -> subprocess.Popen[bytes]:
    settings = out.settings
    out.root.mkdir(parents=True, exist_ok=True)
    with (out.root / "quix.log").open("ab") as log:
        return subprocess.Popen(
            [
                str(quix_env.ensure()),
                str(BENCH_DIR / "peers" / "quix_analytics.py"),
                "--broker",
                settings.kafka_bootstrap_servers,
                "--registry",
                settings.schema_registry_url,
                "--input",
                source.deployment.names.order_created,
                "--output-prefix",
                f"{out.name}.",
                "--group",
                out.name,
                "--state-dir",
                str(out.root / "state"),
                "--schemas-dir",
                str(BENCH_DIR.parent / "schemas"),
                "--grace-ms",
                str(GRACE_MS),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def quix_changelogs(settings: Settings, group: str, timeout: float = 120.0) -> list[str]:
    """The changelog topics of the Quix peer's two windows, which it makes at start-up
    (``changelog__<group>--...``), before it reads a record."""
    admin = admin_client(settings)
    found: list[str] = []

    def made() -> bool:
        names = admin.list_topics(timeout=10).topics
        found[:] = [name for name in names if name.startswith(f"changelog__{group}--")]
        return len(found) == 2

    wait_for(f"the Quix peer's changelog topics ({group})", made, timeout=timeout, interval=0.05)
    return found


def run_quix(source: Input, label: str) -> float:
    out = one_partition(f"{source.deployment.name}-{label}", source.deployment.root / label)
    prepare(out)  # the finals topic and its subject
    finals = out.names.sku_sales_hourly
    offsets = Offsets(out.settings)
    process = start_quix(source, out)
    try:
        # The first derived record: the first write to either window's changelog.
        changelogs = quix_changelogs(out.settings, out.name)
        before = cpu_seconds(process.pid)
        start = {**dict.fromkeys(changelogs, 0), finals: offsets.end(finals)}
        expected = {**dict.fromkeys(changelogs, 1), finals: source.expected.windows}
        window = watch_outputs(
            offsets,
            expected,
            source.timeout(),
            alive=lambda: process.poll() is None,
            start=start,
        )
        used = cpu_seconds(process.pid) - before
        print(
            f"  {out.name}: CPU {used:.1f} s while processing, "
            f"{used / source.orders * 1e6:,.0f} us/order, "
            f"peak RSS {peak_rss_bytes(process.pid) / 1024**2:,.0f} MiB",
            flush=True,
        )
    finally:
        stop_process(process)
        offsets.close()
    check(QUIX, source.expected, read_finals(out))
    return window.seconds


def store_keys(data_dir: Path) -> dict[str, int]:
    """The keys of each windowed table's RocksDB stores under a stopped worker's
    ``data_dir`` (each partition's database, opened read-only): its window rows (of the
    sliding day: hourly panes), their index entries and the partition's clock."""
    counts = dict.fromkeys(TABLES, 0)
    for table in TABLES:
        paths = sorted(data_dir.rglob(f"{table}-*.db"))
        if not paths:
            raise RuntimeError(f"no store of {table} under {data_dir}")
        for path in paths:
            db = Rdict(
                str(path), options=Options(raw_mode=True), access_type=AccessType.read_only()
            )
            try:
                counts[table] += len(list(db.keys()))
            finally:
                db.close()
    return counts


def caught_up(worker: WorkerProcess, offsets: Offsets, group: str, wanted: dict[str, int]) -> bool:
    if not worker.running():
        raise worker.failure("exited")
    return all(offsets.committed(group, topic) >= end for topic, end in wanted.items())


def run_store(
    root: Path, retention_ms: int, parts: Sequence[list[dict[str, Any]]], expected: Totals
) -> list[dict[str, int]]:
    """One analytics worker fed ``parts`` one after the other, stopped once it committed
    each; its stores' keys at each stop, once its finals are checked."""
    deployment = one_partition(f"bench-{run_id()}-{root.name}", root, retention_ms)
    codecs = prepare(deployment)
    analytics = analytics_settings(deployment.settings)
    group = analytics.app_id
    repartition = TopicNames.from_settings(analytics).internal(SALES_BY_SKU)
    worker = deployment.worker("analytics", app=ANALYTICS_APP)
    offsets = Offsets(deployment.settings)
    wanted = {deployment.names.order_created: 0, repartition: 0}
    keys = []
    try:
        for part in parts:
            wanted[deployment.names.order_created] += load(deployment, codecs, part)
            wanted[repartition] += sales(part)
            worker = worker.replacement().start()
            wait_for(
                f"{group} to commit {wanted}",
                functools.partial(caught_up, worker, offsets, group, dict(wanted)),
                timeout=max(180.0, wanted[repartition] / 100),
                interval=0.5,
            )
            worker.stop()
            keys.append(store_keys(worker.data_dir))
            print(f"  {deployment.name}: store keys {keys[-1]}", flush=True)
    finally:
        worker.stop()
        offsets.close()
    check(f"{PIPELINE} ({root.name})", expected, read_finals(deployment))
    return keys


@dataclass(frozen=True)
class StoreSizes:
    """Store keys per table at the half and the end of the store run's orders, then past
    the closing orders (a window more of every SKU)."""

    orders: int  # closing orders included
    expiring: list[dict[str, int]]  # windows kept STORE_RETENTION_MS
    unexpired: list[dict[str, int]]  # the default retention: nothing expires


def measure_store(root: Path, orders: int, users: int, skus: int) -> StoreSizes:
    print(
        f"store run: {orders:,} orders over {STORE_SPAN_HOURS} h of event time, in two "
        "halves, then the closing orders",
        flush=True,
    )
    start, records, closing, expected = orders_over(STORE_SPAN_HOURS, orders, users, skus)
    middle = start + STORE_SPAN_HOURS // 2 * HOUR_MS
    parts = (
        [record for record in records if record["created_at"] < middle],
        [record for record in records if record["created_at"] >= middle],
        closing,
    )
    root = root / f"windowed-store-{orders}"
    expiring = run_store(root / "expiring", STORE_RETENTION_MS, parts, expected)
    unexpired = run_store(root / "unexpired", Settings.analytics_retention_ms, parts, expected)
    return StoreSizes(len(records) + len(closing), expiring, unexpired)


@dataclass
class Results:
    source: Input
    rates: dict[str, list[float]] = field(default_factory=dict)
    # Ratio of the pipeline to Quix within each repeat (same minute, same noise).
    ratios: list[float] = field(default_factory=list)

    def add(self, system: str, seconds: float) -> float:
        rate = self.source.orders / seconds
        self.rates.setdefault(system, []).append(rate)
        print(f"  {system:<16} {rate:>10,.0f} orders/s ({seconds:.1f} s)", flush=True)
        return rate


def measure(root: Path, orders: int, users: int, skus: int, repeats: int, quix: bool) -> Results:
    print(f"pre-loading {orders:,} orders over {SPAN_HOURS} h of event time ...", flush=True)
    source = make_input(root, orders, users, skus)
    print(
        f"  {source.orders:,} orders (closing ones included), {source.lines:,} sales, "
        f"{source.expected.windows:,} SKU hours expected, in {source.seconds:.1f} s",
        flush=True,
    )
    results = Results(source)
    systems = SYSTEMS if quix else (PIPELINE,)
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}", flush=True)
        rates = {}
        # Alternate which goes first, so neither always runs on a warmer machine.
        for system in systems if repeat % 2 == 0 else systems[::-1]:
            label = f"{system.replace(' ', '')}-r{repeat}"
            run = run_pipeline if system == PIPELINE else run_quix
            rates[system] = results.add(system, run(source, label))
        if QUIX in rates:
            results.ratios.append(rates[PIPELINE] / rates[QUIX])
    return results


def rows(results: Results, users: int) -> list[Row]:
    source = results.source
    notes = (
        f"N={source.orders:,} orders ({source.lines:,} sales by SKU) of {users:,} users over "
        f"{SPAN_HOURS} h of event time, 1 partition, grace {GRACE_MS // 60_000} min; "
        f"{source.expected.windows:,} hour finals checked equal in total; {cores()} cores"
    )
    out = []
    for system, rates in results.rates.items():
        ratio = ""
        if system == PIPELINE and results.ratios:
            ratio = (
                f"{median(results.ratios):.2f}x {QUIX} (per repeat: "
                + ", ".join(f"{r:.2f}" for r in results.ratios)
                + ")"
            )
        out.append(Row(PART, f"{system}: orders/s", spread(rates), ratio, notes))
    return out


def store_rows(sizes: StoreSizes, users: int) -> list[Row]:
    half = STORE_SPAN_HOURS // 2
    notes = (
        f"N={sizes.orders:,} orders of {users:,} users over {STORE_SPAN_HOURS} h of event "
        f"time, 1 partition, grace {GRACE_MS // 60_000} min; the worker stopped at {half} h "
        "and at the end (before the closing orders), its RocksDB stores' keys counted "
        "(window rows or hourly panes, their index entries, the clock); without expiry: the "
        "same input, the default retention; finals checked equal in total"
    )
    out = []
    for table in TABLES:
        kept_half, kept_end = (keys[table] for keys in sizes.expiring[:2])
        all_half, all_end = (keys[table] for keys in sizes.unexpired[:2])
        out.append(
            Row(
                PART,
                f"{PIPELINE}: {table} store keys at {half} h / {STORE_SPAN_HOURS} h",
                f"{kept_half:,} / {kept_end:,} (retention {STORE_RETENTION_MS // HOUR_MS} h)",
                f"{kept_end / kept_half:.2f}x; without expiry {all_half:,} / {all_end:,}, "
                f"{all_end / all_half:.2f}x",
                notes,
            )
        )
    return out


def run(
    root: Path,
    orders: int | None,
    users: int,
    skus: int,
    repeats: int,
    quix: bool = True,
) -> list[Row]:
    orders = orders or DEFAULT_ORDERS
    results = measure(root, orders, users, skus, repeats, quix)
    return rows(results, users) + store_rows(measure_store(root, orders, users, skus), users)
