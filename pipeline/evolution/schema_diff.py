"""Field by field: what changed between two versions of a record schema."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NO_DEFAULT = object()


@dataclass(frozen=True)
class FieldChange:
    path: str  # e.g. "items[].discount_cents"
    change: str  # added | removed | renamed | type changed | default changed
    detail: str

    def __str__(self) -> str:
        return f"{self.change:<16} {self.path}: {self.detail}"


def field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[FieldChange]:
    """Changes from record schema ``old`` to ``new``, nested records included."""
    changes: list[FieldChange] = []
    _diff_record(old, new, "", changes)
    return changes


def _type_text(schema: Any) -> str:
    if isinstance(schema, Mapping) and schema.get("type") in ("record", "enum", "fixed"):
        return str(schema["name"])
    if isinstance(schema, Mapping) and schema.get("type") == "array":
        return f"array<{_type_text(schema['items'])}>"
    if isinstance(schema, Mapping) and schema.get("type") == "map":
        return f"map<{_type_text(schema['values'])}>"
    if isinstance(schema, list):
        return "[" + ", ".join(_type_text(branch) for branch in schema) + "]"
    if isinstance(schema, Mapping) and "logicalType" in schema:
        return f"{schema['type']} ({schema['logicalType']})"
    if isinstance(schema, Mapping):
        return _type_text(schema["type"])
    return str(schema)


def _without_docs(schema: Any) -> Any:
    """The schema with docs dropped: a changed doc is not a changed type."""
    if isinstance(schema, list):
        return [_without_docs(branch) for branch in schema]
    if isinstance(schema, Mapping):
        return {key: _without_docs(value) for key, value in schema.items() if key != "doc"}
    return schema


def _nested_record(schema: Any) -> tuple[Mapping[str, Any], str] | None:
    """The record inside a field type (directly or as array items), with its path suffix."""
    if isinstance(schema, Mapping) and schema.get("type") == "record":
        return schema, ""
    if isinstance(schema, Mapping) and schema.get("type") == "array":
        inner = _nested_record(schema["items"])
        if inner is not None:
            return inner[0], "[]" + inner[1]
    return None


def _default_text(field: Mapping[str, Any]) -> str:
    if "default" not in field:
        return "no default"
    return f"default {json.dumps(field['default'])}"


def _diff_record(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str, changes: list[FieldChange]
) -> None:
    old_fields = {field["name"]: field for field in old.get("fields", [])}
    new_fields = {field["name"]: field for field in new.get("fields", [])}
    renamed_from: dict[str, str] = {}
    for name, field in new_fields.items():
        if name not in old_fields:
            alias = next((a for a in field.get("aliases", []) if a in old_fields), None)
            if alias is not None:
                renamed_from[alias] = name
    for name, field in new_fields.items():
        path = prefix + name
        if name in old_fields:
            _diff_field(old_fields[name], field, path, changes)
        elif any(new_name == name for new_name in renamed_from.values()):
            old_name = next(o for o, n in renamed_from.items() if n == name)
            changes.append(FieldChange(path, "renamed", f"from {old_name} (alias kept)"))
            _diff_field(old_fields[old_name], field, path, changes)
        else:
            changes.append(
                FieldChange(path, "added", f"{_type_text(field['type'])}, {_default_text(field)}")
            )
    for name, field in old_fields.items():
        if name not in new_fields and name not in renamed_from:
            changes.append(
                FieldChange(
                    prefix + name,
                    "removed",
                    f"{_type_text(field['type'])}, {_default_text(field)}",
                )
            )


def _diff_field(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str, changes: list[FieldChange]
) -> None:
    old_nested, new_nested = _nested_record(old["type"]), _nested_record(new["type"])
    if old_nested and new_nested and old_nested[1] == new_nested[1]:
        _diff_record(old_nested[0], new_nested[0], f"{path}{new_nested[1]}.", changes)
    elif _without_docs(old["type"]) != _without_docs(new["type"]):
        changes.append(
            FieldChange(
                path, "type changed", f"{_type_text(old['type'])} -> {_type_text(new['type'])}"
            )
        )
    if old.get("default", _NO_DEFAULT) != new.get("default", _NO_DEFAULT):
        changes.append(
            FieldChange(path, "default changed", f"{_default_text(old)} -> {_default_text(new)}")
        )
