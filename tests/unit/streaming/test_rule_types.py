"""A rule of the wrong shape, or emitting a value its topic does not take, is a type error:
mypy checks every rule against its agent, and what it emits against its topic's kind."""

from __future__ import annotations

from pathlib import Path

from mypy import api

WRONG_SHAPES = Path(__file__).parent / "rule_shapes" / "wrong_shapes.py"


def test_mypy_refuses_rules_of_the_wrong_shape_or_emits_and_accepts_the_right_ones() -> None:
    report, _, status = api.run(["--strict", "--no-error-summary", str(WRONG_SHAPES)])
    errors = [line for line in report.splitlines() if "error:" in line]
    assert status == 1
    refused = ["20", "25", "30", "43", "50", "65", "70", "83"]
    assert [error.split(":")[1] for error in errors] == refused, report
    assert all("[arg-type]" in error for error in errors), report
