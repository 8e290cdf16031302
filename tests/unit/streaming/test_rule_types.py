"""A rule of the wrong shape is a type error: mypy checks every rule against its agent."""

from __future__ import annotations

from pathlib import Path

from mypy import api

WRONG_SHAPES = Path(__file__).parent / "rule_shapes" / "wrong_shapes.py"


def test_mypy_refuses_rules_of_the_wrong_shape_and_accepts_the_right_ones() -> None:
    report, _, status = api.run(["--strict", "--no-error-summary", str(WRONG_SHAPES)])
    errors = [line for line in report.splitlines() if "error:" in line]
    assert status == 1
    assert [error.split(":")[1] for error in errors] == ["18", "23", "28", "41", "48"], report
    assert all("[arg-type]" in error for error in errors), report
