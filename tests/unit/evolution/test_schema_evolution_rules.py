"""The local compatibility rules and the field diff behind `pipeline schemas check/diff`."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline.evolution.avro_compat import compatibility_problems, read_problems
from pipeline.evolution.schema_diff import field_changes
from pipeline.serde.catalog import Catalog


def order_v1() -> dict[str, Any]:
    return copy.deepcopy(dict(Catalog.load()["order_created"].schema))


def with_field(schema: dict[str, Any], field: dict[str, Any]) -> dict[str, Any]:
    schema["fields"].append(field)
    return schema


OPTIONAL_COUPON = {"name": "coupon", "type": ["null", "string"], "default": None}
REQUIRED_CURRENCY = {"name": "currency", "type": "string"}


def test_an_optional_field_with_a_default_is_backward_and_forward_compatible() -> None:
    v2 = with_field(order_v1(), OPTIONAL_COUPON)
    assert compatibility_problems("FULL_TRANSITIVE", v2, [(1, order_v1())]) == []


def test_a_required_field_without_default_breaks_backward_naming_the_field() -> None:
    v2 = with_field(order_v1(), REQUIRED_CURRENCY)
    problems = compatibility_problems("BACKWARD", v2, [(1, order_v1())])
    assert len(problems) == 1
    assert "version 1" in problems[0]
    assert problems[0].endswith(
        "field currency is missing from the writer's schema and has no default (add a default "
        "to field currency of record shop.OrderCreated, or an alias naming the old field)"
    )
    # Old readers simply ignore the new field.
    assert compatibility_problems("FORWARD", v2, [(1, order_v1())]) == []


def test_a_rename_without_alias_is_incompatible_and_with_alias_is_not() -> None:
    renamed = order_v1()
    renamed["fields"][0]["name"] = "order_ref"
    assert any(
        "order_ref" in p for p in compatibility_problems("BACKWARD", renamed, [(1, order_v1())])
    )
    renamed["fields"][0]["aliases"] = ["order_id"]
    assert compatibility_problems("BACKWARD", renamed, [(1, order_v1())]) == []


def test_transitive_levels_check_every_version_and_plain_ones_only_the_latest() -> None:
    v1 = order_v1()
    v2 = with_field(order_v1(), {**REQUIRED_CURRENCY, "default": "EUR"})
    v3 = with_field(order_v1(), REQUIRED_CURRENCY)  # drops the default again
    registered = [(1, v1), (2, v2)]
    assert compatibility_problems("BACKWARD", v3, registered) == []  # v2 wrote currency
    transitive = compatibility_problems("BACKWARD_TRANSITIVE", v3, registered)
    assert len(transitive) == 1
    assert "version 1" in transitive[0]


def test_a_nested_type_change_is_named_by_its_path() -> None:
    v2 = order_v1()
    v2["fields"][2]["type"]["items"]["fields"][1]["type"] = "string"  # items[].quantity
    assert read_problems(v2, order_v1()) == ["items[].quantity: type changed from int to string"]


@pytest.mark.parametrize(
    ("writer", "reader"),
    [("int", "long"), ("int", "double"), ("long", "float"), ("string", "bytes")],
)
def test_avro_promotions_are_allowed(writer: str, reader: str) -> None:
    assert read_problems(reader, writer) == []


def test_demotions_are_not() -> None:
    assert read_problems("int", "long") == ["the record: type changed from long to int"]


def test_none_level_accepts_anything() -> None:
    assert (
        compatibility_problems(
            "NONE", {"type": "record", "name": "X", "fields": []}, [(1, order_v1())]
        )
        == []
    )


def test_diff_names_added_removed_type_and_default_changes() -> None:
    old = with_field(order_v1(), {"name": "note", "type": "string", "default": ""})
    new = with_field(order_v1(), OPTIONAL_COUPON)
    new["fields"][3]["type"] = "int"  # total_cents
    new["fields"][2]["type"]["items"]["fields"].append(
        {"name": "gift", "type": "boolean", "default": False}
    )
    changes = {(c.path, c.change): c.detail for c in field_changes(old, new)}
    assert changes == {
        ("items[].gift", "added"): "boolean, default false",
        ("total_cents", "type changed"): "long -> int",
        ("coupon", "added"): "[null, string], default null",
        ("note", "removed"): 'string, default ""',
    }


def test_diff_reports_a_default_change_and_a_rename_kept_by_alias() -> None:
    old = with_field(order_v1(), {"name": "note", "type": "string", "default": ""})
    new = with_field(
        order_v1(), {"name": "remark", "aliases": ["note"], "type": "string", "default": "-"}
    )
    changes = [(c.path, c.change, c.detail) for c in field_changes(old, new)]
    assert changes == [
        ("remark", "renamed", "from note (alias kept)"),
        ("remark", "default changed", 'default "" -> default "-"'),
    ]


def test_a_changed_doc_is_not_a_change() -> None:
    new = order_v1()
    new["fields"][0]["doc"] = "Something else."
    assert field_changes(order_v1(), new) == []


def test_enum_and_fixed_names_are_compared() -> None:
    reader = {"type": "enum", "name": "E2", "symbols": ["A"]}
    writer = {"type": "enum", "name": "E1", "symbols": ["A"]}
    assert read_problems(reader, writer) == [
        'the record: enum name changed from E1 to E2 without an alias (add the alias "E1" to E2)'
    ]
    fixed = {"type": "fixed", "name": "F", "size": 4}
    assert read_problems({**fixed, "name": "G", "aliases": ["F"]}, fixed) == []


def test_records_of_one_short_name_in_two_namespaces_are_each_checked() -> None:
    def outer(inner_fields: list[dict[str, Any]]) -> dict[str, Any]:
        inner = {"type": "record", "name": "a.E", "fields": inner_fields}
        return {"type": "record", "name": "E", "fields": [{"name": "b", "type": inner}]}

    assert read_problems(outer([{"name": "c", "type": "int"}]), outer([])) == [
        "field b.c is missing from the writer's schema and has no default "
        "(add a default to field c of record a.E, or an alias naming the old field)"
    ]


def test_a_dotless_reference_means_the_type_of_the_enclosing_namespace() -> None:
    def schema(inner_field: str) -> dict[str, Any]:
        other = {"type": "record", "name": "R", "fields": [{"name": "x", "type": "int"}]}
        mine = {"type": "record", "name": "R", "fields": [{"name": inner_field, "type": "int"}]}
        return {
            "type": "record",
            "name": "Top",
            "fields": [
                {"name": "other", "type": other},  # R, no namespace
                {
                    "name": "box",
                    "type": {
                        "type": "record",
                        "name": "n.Box",
                        "fields": [
                            {"name": "mine", "type": mine},  # n.R
                            {"name": "again", "type": "R"},  # n.R, not R
                        ],
                    },
                },
            ],
        }

    assert read_problems(schema("y"), schema("y")) == []
    assert read_problems(schema("y"), schema("z")) == [
        "field box.mine.y is missing from the writer's schema and has no default "
        "(add a default to field y of record n.R, or an alias naming the old field)"
    ]


def test_reader_aliases_are_full_names() -> None:
    writer = {"type": "record", "name": "b.Old", "fields": []}
    relative = {"type": "record", "name": "a.New", "aliases": ["Old"], "fields": []}
    assert read_problems(relative, writer) == [
        "the record: record name changed from b.Old to a.New without an alias "
        '(add the alias "b.Old" to a.New)'
    ]
    assert read_problems({**relative, "aliases": ["b.Old"]}, writer) == []
    assert read_problems(relative, {**writer, "name": "a.Old"}) == []


def test_a_reader_union_reads_with_its_first_matching_branch() -> None:
    def record(namespace: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
        return {"type": "record", "name": "R", "namespace": namespace, "fields": fields}

    needs_y = record("a", [{"name": "y", "type": "int"}])
    has_x = record("b", [{"name": "x", "type": "int"}])
    (problem,) = read_problems([needs_y, has_x], record("c", [{"name": "x", "type": "int"}]))
    assert "is read as record a.R, the first branch of the reader's union" in problem
    assert "a later branch, record b.R, could (move it before record a.R)" in problem
    assert read_problems([has_x, needs_y], record("c", [{"name": "x", "type": "int"}])) == []


def test_a_record_and_a_fixed_of_one_name_say_which_is_which() -> None:
    record = {"type": "record", "name": "a.F", "fields": []}
    fixed = {"type": "fixed", "name": "a.F", "size": 2}
    assert read_problems(record, fixed) == ["the record: type changed from fixed a.F to record a.F"]


def test_ambiguous_field_aliases_are_refused() -> None:
    writer = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "x", "type": "int"}, {"name": "y", "type": "int"}],
    }
    both = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "x", "aliases": ["y"], "type": "int"}],
    }
    assert "names several fields of the writer's record R (x, y)" in read_problems(both, writer)[0]
    shared = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "z", "aliases": ["y"], "type": "int"},
            {"name": "y", "type": "int"},
        ],
    }
    (problem,) = read_problems(shared, writer)
    assert "field y of the writer's record R is read by more than one field" in problem
