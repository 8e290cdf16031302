"""Check a record against its Avro schema and name every bad field and value.

Used off the hot path: when fastavro's writer refuses a record (to say exactly
why), and by callers that must report all problems at once (an HTTP 400).
``encode_guard`` is the one check that runs on every encode, because fastavro's
writer silently accepts what Avro forbids (bools, floats and out-of-range
numbers in ``int``/``long`` fields) and takes a naive datetime as local time.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

INT_RANGE = (-(2**31), 2**31 - 1)
LONG_RANGE = (-(2**63), 2**63 - 1)
TIMESTAMPS = ("timestamp-millis", "timestamp-micros")
PRIMITIVE_TYPES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")

Guard = Callable[[Any], bool]


def record_problems(schema: Mapping[str, Any], record: Any) -> list[str]:
    """Every problem of ``record`` under the (unparsed) record ``schema``; [] if valid."""
    problems: list[str] = []
    _check(schema, record, "", _NamedTypes(schema.get("namespace")), problems)
    return problems


class _NamedTypes:
    """Named types seen so far (records, enums, fixed), by full name, for references."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self.types: dict[str, Mapping[str, Any]] = {}

    def full_name(self, name: str, namespace: str | None) -> str:
        if "." in name or not namespace:
            return name
        return f"{namespace}.{name}"

    def remember(self, schema: Mapping[str, Any], namespace: str | None) -> str | None:
        full = self.full_name(str(schema["name"]), schema.get("namespace", namespace))
        self.types[full] = schema
        return full.rpartition(".")[0] or None

    def lookup(self, name: str, namespace: str | None) -> Mapping[str, Any] | None:
        return self.types.get(self.full_name(name, namespace)) or self.types.get(name)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _is_int(value: Any, bounds: tuple[int, int]) -> bool:
    return type(value) is int and bounds[0] <= value <= bounds[1]


def _check(schema: Any, value: Any, path: str, names: _NamedTypes, problems: list[str]) -> None:
    where = path or "record"
    if isinstance(schema, list):
        if not any(_matches(branch, value, names) for branch in schema):
            problems.append(
                f"{where}: {_describe(value)} matches none of {_type_names(schema, names)}"
            )
        return
    if isinstance(schema, str):
        if schema in PRIMITIVE_TYPES:
            _check_primitive(schema, None, value, where, problems)
            return
        named = names.lookup(schema, names.namespace)
        if named is None:
            problems.append(f"{where}: schema names unknown type {schema!r}")
            return
        schema = named
    kind = schema["type"]
    if kind in PRIMITIVE_TYPES:
        _check_primitive(kind, schema.get("logicalType"), value, where, problems)
    elif kind == "record":
        namespace = names.remember(schema, names.namespace)
        if not isinstance(value, Mapping):
            problems.append(f"{where}: {_describe(value)} is not a record (mapping)")
            return
        outer, names.namespace = names.namespace, namespace
        for field in schema["fields"]:
            name = field["name"]
            field_path = f"{path}.{name}" if path else name
            if name not in value:
                if "default" not in field:
                    problems.append(f"{field_path}: missing, and the field has no default")
                continue
            _check(field["type"], value[name], field_path, names, problems)
        # fastavro's writer drops unknown fields silently: a typo would lose data unseen.
        known = {field["name"] for field in schema["fields"]}
        for extra in sorted((key for key in value if key not in known), key=str):
            extra_path = f"{path}.{extra}" if path else str(extra)
            problems.append(f"{extra_path}: not a field of {schema['name']}")
        names.namespace = outer
    elif kind == "array":
        if not isinstance(value, list | tuple):
            problems.append(f"{where}: {_describe(value)} is not an array (list)")
            return
        for index, item in enumerate(value):
            _check(schema["items"], item, f"{path}[{index}]", names, problems)
    elif kind == "map":
        if not isinstance(value, Mapping):
            problems.append(f"{where}: {_describe(value)} is not a map (dict)")
            return
        for key, item in value.items():
            if not isinstance(key, str):
                problems.append(f"{where}: map key {_describe(key)} is not a string")
            _check(schema["values"], item, f"{path}[{key!r}]", names, problems)
    elif kind == "enum":
        names.remember(schema, names.namespace)
        if value not in schema["symbols"]:
            problems.append(f"{where}: {_describe(value)} is not one of {schema['symbols']}")
    elif kind == "fixed":
        names.remember(schema, names.namespace)
        if not isinstance(value, bytes) or len(value) != schema["size"]:
            problems.append(f"{where}: {_describe(value)} is not {schema['size']} bytes")
    else:
        _check(kind, value, path, names, problems)


def _check_primitive(
    kind: str, logical: str | None, value: Any, where: str, problems: list[str]
) -> None:
    if logical in TIMESTAMPS and isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            # fastavro would take a naive datetime as the process's local time.
            problems.append(
                f"{where}: {_describe(value)} has no time zone (use an aware datetime, "
                "e.g. tzinfo=UTC, or epoch milliseconds)"
            )
        return
    if logical == "date" and isinstance(value, datetime.date):
        return
    ok = {
        "null": value is None,
        "boolean": type(value) is bool,
        "int": _is_int(value, INT_RANGE),
        "long": _is_int(value, LONG_RANGE),
        "float": type(value) in (int, float),
        "double": type(value) in (int, float),
        "bytes": isinstance(value, bytes | bytearray),
        "string": isinstance(value, str),
    }[kind]
    if not ok:
        expected = _EXPECTED[kind]
        if logical:
            expected += f" or a datetime ({logical})"
        problems.append(f"{where}: {_describe(value)} is not {expected}")


_EXPECTED = {
    "null": "null",
    "boolean": "a boolean",
    "int": "an int (32-bit integer)",
    "long": "a long (64-bit integer)",
    "float": "a float",
    "double": "a double",
    "bytes": "bytes",
    "string": "a string",
}


def _matches(schema: Any, value: Any, names: _NamedTypes) -> bool:
    trial: list[str] = []
    _check(schema, value, "", names, trial)
    return not trial


def _type_names(union: list[Any], names: _NamedTypes) -> list[str]:
    return [b if isinstance(b, str) else str(b.get("name", b["type"])) for b in union]


def encode_guard(schema: Mapping[str, Any]) -> Guard | None:
    """A fast check of the int, long and timestamp fields of a record schema; None if none.

    It runs on every encode, so it is generated as one flat function (closures per
    field cost about 2 us a record, the generated code a fraction of that). It
    follows records and arrays, where our schemas keep their numbers; unions and maps
    are left to the writer and to ``record_problems``. Absent fields and values of
    the wrong shape pass: the writer refuses those itself.
    """
    lines: list[str] = []
    _guard_lines(schema, "value", 1, lines, set())
    if not lines:
        return None
    source = "def guard(value):\n" + "\n".join(lines) + "\n    return True\n"
    namespace: dict[str, Any] = {
        "Mapping": Mapping,
        "MISSING": _MISSING,
        "datetime": datetime.datetime,
    }
    exec(compile(source, f"<encode guard for {schema.get('name')}>", "exec"), namespace)
    guard: Guard = namespace["guard"]
    return guard


_MISSING = object()
_BOUNDS = {"int": INT_RANGE, "long": LONG_RANGE}


def _guard_lines(schema: Any, var: str, depth: int, lines: list[str], seen: set[str]) -> None:
    """Append code that returns False when ``var`` breaks a number rule of ``schema``."""
    pad = "    " * depth
    if isinstance(schema, list):
        return  # unions: left to the writer
    kind = schema if isinstance(schema, str) else schema.get("type")
    logical = schema.get("logicalType") if isinstance(schema, Mapping) else None
    if logical in TIMESTAMPS:
        # Epoch numbers, or aware datetimes: fastavro takes a naive one as local time.
        low, high = LONG_RANGE
        lines.append(
            f"{pad}if not ((type({var}) is int and {low} <= {var} <= {high})"
            f" or (isinstance({var}, datetime) and {var}.tzinfo is not None)):"
        )
        lines.append(f"{pad}    return False")
    elif logical:
        return  # other logical types (date, decimal, uuid): left to the writer
    elif kind in _BOUNDS:
        low, high = _BOUNDS[kind]
        lines.append(f"{pad}if not (type({var}) is int and {low} <= {var} <= {high}):")
        lines.append(f"{pad}    return False")
    elif kind == "array" and isinstance(schema, Mapping):
        body: list[str] = []
        item = f"item{depth}"
        _guard_lines(schema["items"], item, depth + 2, body, seen)
        if body:
            lines.append(f"{pad}if type({var}) is list:")
            lines.append(f"{pad}    for {item} in {var}:")
            lines.extend(body)
    elif kind == "record" and isinstance(schema, Mapping) and schema["name"] not in seen:
        seen.add(schema["name"])  # a recursive record is checked once, the writer does the rest
        body = []
        for index, field in enumerate(schema["fields"]):
            field_var = f"field{depth}_{index}"
            field_body: list[str] = []
            _guard_lines(field["type"], field_var, depth + 2, field_body, seen)
            if field_body:
                body.append(f"{pad}    {field_var} = {var}.get({field['name']!r}, MISSING)")
                body.append(f"{pad}    if {field_var} is not MISSING:")
                body.extend(field_body)
        if body:
            lines.append(f"{pad}if type({var}) is dict or isinstance({var}, Mapping):")
            lines.extend(body)
