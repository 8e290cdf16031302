"""Differential test: ``pipeline.evolution.avro_compat`` against Apache Avro Java's
SchemaCompatibility.

Both judge the same pairs: thousands drawn by Hypothesis (names, namespaces, aliases, references,
promotions, unions, enums, fixed, fields added, dropped and renamed, recursion) and the pairs of
Avro's own compatibility tests (``avro_oracle/apache_avro_pairs.jsonl``, transcribed from
``TestSchemaCompatibility*.java`` of Avro 1.12.1). They must agree except in the cases
``docs/schema-compatibility.md`` documents, where we are stricter than Avro's checker on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from pipeline.evolution.avro_compat import read_problems
from tests.unit.evolution.avro_oracle import AvroOracle
from tests.unit.evolution.avro_oracle.schema_pairs import schema_pairs

APACHE_AVRO_PAIRS = Path(__file__).with_name("avro_oracle") / "apache_avro_pairs.jsonl"
GENERATED_PAIRS = 4000

# Messages of the documented cases where we refuse what Avro's checker accepts
# (docs/schema-compatibility.md): a reader union whose first matching branch cannot read the
# writer while a later one could, and a writer field that several reader fields would read.
STRICTER_ON_PURPOSE = (
    "the first branch of the reader's union that matches it",
    "is read by more than one field",
)


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AvroOracle]:
    running = AvroOracle(tmp_path_factory.mktemp("avro-oracle"))
    yield running
    running.close()


def avro_accepts(verdict: str) -> bool:
    """Avro's verdict as a yes or no; its checker throws on a reader field that names two
    writer fields, which is a refusal too (we refuse it, with a reason)."""
    if verdict in ("COMPATIBLE", "INCOMPATIBLE"):
        return verdict == "COMPATIBLE"
    if verdict.startswith("ERROR") and "matches multiple fields in writer record" in verdict:
        return False
    raise AssertionError(f"Avro could not judge the pair: {verdict}")


def disagreement(verdict: str, reader: Any, writer: Any) -> str | None:
    """Why we and Avro disagree on a pair, or None if we agree or the case is documented."""
    problems = read_problems(reader, writer)
    if avro_accepts(verdict) == (not problems):
        return None
    if problems and all(any(case in p for case in STRICTER_ON_PURPOSE) for p in problems):
        return None
    ours = "; ".join(problems) or "compatible"
    pair = f"reader: {json.dumps(reader)}\nwriter: {json.dumps(writer)}"
    return f"Avro says {verdict}, we say {ours}\n{pair}"


def test_apache_avros_own_pairs(oracle: AvroOracle) -> None:
    cases = [json.loads(line) for line in APACHE_AVRO_PAIRS.read_text().splitlines()]
    verdicts = oracle.verdicts([(case["reader"], case["writer"]) for case in cases])
    # The transcription is faithful: Avro 1.12.1 still gives the verdicts its tests expect.
    assert [case["avro_test_expects"] for case in cases] == verdicts
    found = [
        f"{case['source']}: {why}"
        for case, verdict in zip(cases, verdicts, strict=True)
        if (why := disagreement(verdict, case["reader"], case["writer"])) is not None
    ]
    assert found == []


@settings(
    max_examples=GENERATED_PAIRS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(pair=schema_pairs())
def test_generated_pairs(oracle: AvroOracle, pair: tuple[Any, Any]) -> None:
    reader, writer = pair
    why = disagreement(oracle.verdict(reader, writer), reader, writer)
    assert why is None, why
