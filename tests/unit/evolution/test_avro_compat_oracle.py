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
    "by its short name only, and Avro Java's decoder",
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


MULTIPLE_FIELDS = "matches multiple fields in writer record schema "


def records_by_full_name(schema: Any, namespace: str = "") -> Iterator[tuple[str, Any]]:
    """Every record defined in ``schema``, with its full name."""
    if isinstance(schema, list):
        for branch in schema:
            yield from records_by_full_name(branch, namespace)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            name = str(schema["name"])
            namespace = str(schema.get("namespace", namespace)) if "." not in name else ""
            full = name if "." in name or not namespace else f"{namespace}.{name}"
            namespace = full.rpartition(".")[0]
            if kind != "enum" and kind != "fixed":
                yield full, schema
                for field in schema.get("fields", []):
                    yield from records_by_full_name(field["type"], namespace)
        elif kind == "array":
            yield from records_by_full_name(schema["items"], namespace)
        elif kind == "map":
            yield from records_by_full_name(schema["values"], namespace)
        else:
            yield from records_by_full_name(kind, namespace)


def throws_on_a_branch_it_would_not_pick(verdict: str, reader: Any) -> bool:
    """Avro's checker threw "matches multiple fields" for a writer record that no reader
    record of the same name gives cause for: it compared a reader record with a writer
    record of another name (a union branch resolution would never pair them)."""
    if not verdict.startswith("ERROR") or MULTIPLE_FIELDS not in verdict:
        return False
    at = verdict.index(MULTIPLE_FIELDS) + len(MULTIPLE_FIELDS)
    writer_record, _ = json.JSONDecoder().raw_decode(verdict[at:])
    (full, _), *_ = records_by_full_name(writer_record)
    writer_fields = {field["name"] for field in writer_record["fields"]}
    for name, record in records_by_full_name(reader):
        if name != full:
            continue
        for field in record["fields"]:
            if len(writer_fields & {field["name"], *field.get("aliases", [])}) > 1:
                return False
    return True


def disagreement(verdict: str, reader: Any, writer: Any) -> str | None:
    """Why we and Avro disagree on a pair, or None if we agree or the case is documented."""
    problems = read_problems(reader, writer)
    if avro_accepts(verdict) == (not problems):
        return None
    if not problems and throws_on_a_branch_it_would_not_pick(verdict, reader):
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


def test_avro_throwing_on_a_branch_it_would_not_pick_is_told_apart_from_a_real_refusal() -> None:
    # Found by the generator: reader field B.f has the alias g; the writer's B has only f,
    # but Avro compares reader B with writer A (whose fields f and g both match) and throws.
    b_reader = {
        "type": "record",
        "name": "B",
        "fields": [{"name": "f", "type": "null", "aliases": ["g"]}],
    }
    reader = {
        "type": "record",
        "name": "A",
        "fields": [
            {"name": "f", "type": [b_reader, "A", "null"]},
            {"name": "g", "type": "null"},
        ],
    }
    writer_a = json.dumps(
        {"type": "record", "name": "A", "fields": [{"name": n, "type": "null"} for n in "fg"]}
    )
    verdict = f"ERROR AvroRuntimeException: Reader record field f {MULTIPLE_FIELDS}{writer_a}"
    assert throws_on_a_branch_it_would_not_pick(verdict, reader)
    # Had reader A itself a field naming both f and g, the refusal would be real.
    reader["fields"][1] = {"name": "f2", "type": "null", "aliases": ["f", "g"]}
    assert not throws_on_a_branch_it_would_not_pick(verdict, reader)


def _enum(name: str, namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    spelled = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    return {"type": "enum", **spelled, "symbols": ["S"], **extra}


def _record(name: str, namespace: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    spelled = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    listed = [{"name": each, "type": kind} for each, kind in fields.items()]
    return {"type": "record", **spelled, "fields": listed}


# (reader, writer, refused): a writer's named type ns1.T and a reader union whose branch is T of
# another namespace. Avro 1.12.1's checker compares unqualified names here too
# (schemaNameEquals), so it accepts every pair; its decoder finds an enum's or a fixed's
# branch by full name when the writer's type is not in a union ("Found ns1.T, expecting
# union[null, T]"), so we refuse those (docs/schema-compatibility.md, stricter on purpose).
NAMED_TYPE_INTO_A_UNION_BRANCH_OF_ANOTHER_NAMESPACE = [
    (["null", _enum("T", "ns2")], _enum("T", "ns1"), True),
    (
        ["null", {"type": "fixed", "name": "ns2.T", "size": 1}],
        {"type": "fixed", "name": "ns1.T", "size": 1},
        True,
    ),
    # A record's branch is found by its fields: it decodes.
    (["null", _record("T", "ns2", {"x": "int"})], _record("T", "ns1", {"x": "int"}), False),
    # Nested, the namespace inherited.
    (
        _record("R", "ns2", {"f": ["null", _enum("T")]}),
        _record("R", "ns1", {"f": _enum("T")}),
        True,
    ),
    (
        _record("R", "ns2", {"f": ["null", _record("T", None, {"x": "int"})]}),
        _record("R", "ns1", {"f": _record("T", None, {"x": "int"})}),
        False,
    ),
    # The reader's branch is a dotless reference, resolved in ns2.
    (
        _record("R", "ns2", {"g": _enum("T"), "f": ["null", "T"]}),
        _record("R", "ns1", {"g": _enum("T"), "f": "T"}),
        True,
    ),
    # Union to union decodes; the namespace-less T is another full name.
    (["null", _enum("T", "ns2")], ["null", _enum("T", "ns1")], False),
    (["null", _enum("T", "")], _enum("T", "ns1"), True),
    # The reader's branch names the writer's full name as an alias: found.
    (["null", _enum("T", "ns2", aliases=["ns1.T"])], _enum("T", "ns1"), False),
]


def test_a_named_type_read_by_a_union_branch_of_another_namespace(oracle: AvroOracle) -> None:
    pairs = [
        (reader, writer)
        for reader, writer, _ in NAMED_TYPE_INTO_A_UNION_BRANCH_OF_ANOTHER_NAMESPACE
    ]
    assert oracle.verdicts(pairs) == ["COMPATIBLE"] * len(pairs)
    for reader, writer, refused in NAMED_TYPE_INTO_A_UNION_BRANCH_OF_ANOTHER_NAMESPACE:
        problems = read_problems(reader, writer)
        if refused:
            assert len(problems) == 1 and STRICTER_ON_PURPOSE[2] in problems[0], problems
            assert "'ns1.T'" in problems[0]
        else:
            assert problems == []
    # Another short name is what Avro's checker calls MISSING_UNION_BRANCH; we refuse it too.
    reader, writer = ["null", _enum("U", "ns2")], _enum("T", "ns1")
    assert oracle.verdict(reader, writer) == "INCOMPATIBLE"
    assert read_problems(reader, writer) == [
        "the record: enum ns1.T matches no branch of union [null, enum ns2.U]"
    ]
