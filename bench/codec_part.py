"""Part 6: bench/codec.py's micro-benchmark, called as it is and its output kept."""

from __future__ import annotations

import contextlib
import io

from bench import codec


def run(records: int, repeats: int) -> str:
    """The table bench.codec prints (records/s and time ratios to bare fastavro)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        codec.main.main(
            ["--records", str(records), "--repeats", str(repeats)], standalone_mode=False
        )
    return out.getvalue()
