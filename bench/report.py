"""The results table: printed, and written as Markdown for the README to link to."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from bench.common import Row, cores

METHOD = """\
- **Throughput** (1, 2): a registration of each user (`--users`) is pre-loaded on
  `user_registered`, then the orders as Avro on `order_created` (murmur2 partitioner), one
  input per size; each system reads its own with a consumer group of its own (the bare loops
  the orders alone). Sizes are per system, 20 s or more of its work here
  (`bench.throughput.DEFAULT_ORDERS`, N in the notes; `--orders` gives all the same N); the
  inputs are prefixes of one deterministic order stream, and the ratios compare orders/s.
  Pipeline workers start on a topic of their own, and the input is copied into it once their
  group has settled, so no rebalance lands in the timed window. The time runs from the first
  to the last derived record (`user_order_stats` + `stock_levels` + `notifications` end
  offsets, polled every 0.05 s; `notifications` gets a welcome per user and, since issue 28,
  a confirmation per order); the pipeline must also have committed every input offset.
  *bare*: one Python process, confluent-kafka consume → fastavro decode → encode one stats
  record and one stock level per line → produce, no state, no repartition. *bare topology*:
  the pipeline's topology as the simplest confluent-kafka + fastavro loop with dicts for
  state: user stats → `user_order_stats` + a changelog record; lines re-keyed by SKU through
  the repartition topic, consumed back → stock → `stock_levels` + a changelog record (+
  low-stock alerts); no retries, no dead letters, no replay positions: the ceiling for
  Python on this work. Both bare loops time themselves (first record consumed to last output
  acknowledged) once every output is there. *quix*: the same topology in Quix Streams 3.28.1
  (RocksDB state, `group_by` repartition, Confluent Avro serializers over the registry), in
  its own venv because it pins confluent-kafka <2.13; the welcomes and (a stateful `apply`
  over the two topics `concat`-ed, holding orders until the registration) the confirmations,
  as the pipeline under test does (docs/benchmarks.md). Its final per-user and per-SKU state
  was checked equal to the pipeline's on one run, its `notifications` records on another.
- **Latency** (3) and **sustained rate** (3 sustained): a fresh deployment per run; once the
  system runs (a pipeline worker's group settled, or the Quix peer started), warm-up orders
  go in one at a time until five in a row came out within 250 ms, then a paced producer
  (linger.ms 0, acks=all) offers orders at a fixed rate. A probe in a process of its own
  (`bench.probe`) polls one message at a time and notes when each order arrives on
  `order_created` (transport, the baseline), as `last_order_id` on `user_order_stats`, as
  the last of its lines on `stock_levels` (by `updated_at`, the order's unique `created_at`)
  and, since issue 28, as its confirmation on `notifications` (the users are registered
  before the system starts). The first 5 s are left out; an order not out 15 s after the
  offer ended counts as never. The probe floor is the same probe and producer on an empty
  topic with nothing else running. Sustained: 250 to 4,000 orders/s, one worker and the Quix
  peer interleaved; a rate is sustained when every output's p99 stays under 100 ms; the
  summary is the highest rate up to which every rate was sustained.
- **Windowed** (9): the analytics service (`pipeline.analytics_app`, one worker) and the
  same two windowed aggregations in Quix Streams (`bench/peers/quix_analytics.py`:
  `group_by` SKU, `tumbling_window(1 h, grace).reduce(...).final("partition")` to
  `sku_sales_hourly`; `hopping_window(24 h, 1 h, grace).reduce(...).final("partition")`),
  both in the orders' event time (created_at), same grace, one partition per topic (stream
  time per partition: docs/benchmarks.md). The orders span 18 h of event time, then
  closing orders of every SKU past the last hour's end + grace; the time runs from the
  first derived record (re-keyed sale or window changelog record) to the last final, and
  each run's finals are read back and checked against the (SKU, hour) totals computed from
  the input. The ratio is the median of the per-repeat ratios; repeats alternate which
  system goes first. Store keys: a pipeline-only run, as many orders over 54 h, fed to one
  worker in two halves of event time; the worker stopped after each and the keys of its
  RocksDB stores counted (read-only), with the windows kept 25 h and, on the same input,
  with the default 7 days (nothing expires); then the closing orders, and its finals checked.
- **Recovery and memory** (4, 5): the rows are written straight to the two changelog
  topics in the tables' own layout (a million orders through the agents would take over an hour);
  "ready" is when the views answer for the last key of every partition. Baseline: a
  worker with empty tables, same run. Memory is VmHWM of the worker process.
- **Profile**: py-spy at 100 Hz on one worker, non-blocking; `EpollSelector.select` is the
  event loop waiting for the network, which py-spy counts as busy.
"""

HEADERS = ("part", "measure", "median (min-max, n)", "ratio", "notes")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.part, row.what, row.value, row.ratio, row.notes)


def text_table(rows: Sequence[Row]) -> str:
    table = [HEADERS, *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def markdown(rows: Sequence[Row], command: str, extra: Sequence[tuple[str, str]] = ()) -> str:
    """The whole RESULTS.md: context, the table, then ``extra`` (title, preformatted text)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = os.environ.get("BENCH_PIPELINE_COMMIT", "worktree")
    code = "the working tree" if commit == "worktree" else f"commit `{commit[:12]}`"
    out = [
        "# Benchmark results",
        "",
        f"`{command}` on {now}: {cores()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, local stack (one Kafka broker, Apicurio) on the same "
        "machine. The machine is shared and noisy: compare the ratios, which are measured "
        "in the same run, more than the absolute figures. Values are the median of the "
        "repeats with (min-max, n=repeats).",
        "",
        f"Workers ran the pipeline as of {code}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    out += ["", "## How it is measured", "", METHOD.rstrip()]
    for title, body in extra:
        out += ["", f"## {title}", "", "```", body.rstrip(), "```"]
    return "\n".join(out) + "\n"


def publish(
    rows: Sequence[Row],
    command: str,
    output: Path | None,
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    print()
    print(text_table(rows))
    for title, body in extra:
        print(f"\n{title}\n{body.rstrip()}")
    if output is not None:
        output.write_text(markdown(rows, command, extra))
        print(f"\nwritten to {output}")
