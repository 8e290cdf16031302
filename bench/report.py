"""The results table: printed, and written as Markdown for the README to link to."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from bench.common import Row, cores

METHOD = """\
- **Throughput** (1, 2): N orders are pre-loaded once as Avro on `order_created`
  (murmur2 partitioner); each system reads that input with a consumer group of its own.
  Pipeline workers start on a topic of their own, and the input is copied into it once
  their group has settled, so no rebalance lands in the timed window. The time runs from
  the first to the last derived record (`user_order_stats` + `stock_levels` end offsets,
  polled every 0.05 s); the pipeline must also have committed every input offset.
  *bare*: one Python process, confluent-kafka consume → fastavro decode → encode one
  stats record and one stock level per line → produce, no state, no repartition; it
  times itself (first record consumed to last output acknowledged). *quix*: the same
  topology in Quix Streams 3.28.1 (RocksDB state, `group_by` repartition, Confluent Avro
  serializers over the registry), in its own venv because it pins confluent-kafka <2.13.
  Its final per-user and per-SKU state was checked equal to the pipeline's on one run.
- **Latency** (3): one worker, orders produced at a fixed rate; a consumer thread in the
  bench notes when each order id arrives on `order_created` (transport, the baseline)
  and as `last_order_id` on `user_order_stats`; the first 2 s are left out.
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
