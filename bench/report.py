"""The results table: printed, and written as Markdown for the README to link to."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from bench.common import Row, cores

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
