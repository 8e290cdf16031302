"""Avro schema resolution rules, to say *why* two schemas are incompatible.

The registry is the authority on compatibility, but Apicurio's compatibility
endpoint answers only true or false (``verbose=true`` adds no messages), so
``pipeline schemas check`` explains a refusal with these rules: can a reader
with one schema read data written with another (Avro spec, "Schema Resolution")?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
# Writer type -> reader types it may be read as.
PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def read_problems(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` cannot be read with ``reader``; [] if it can."""
    resolver = _Resolver(_named_types(reader), _named_types(writer))
    resolver.resolve(reader, writer, "")
    return resolver.problems


def compatibility_problems(
    level: str, new: Any, registered: Sequence[tuple[int, Any]]
) -> list[str]:
    """Problems of ``new`` against ``registered`` (version, schema) under a compatibility level.

    ``registered`` is oldest first; non-transitive levels look at the last one only.
    """
    level = level.upper()
    if level == "NONE" or not registered:
        return []
    targets = registered if level.endswith("_TRANSITIVE") else registered[-1:]
    backward = level.startswith(("BACKWARD", "FULL"))
    forward = level.startswith(("FORWARD", "FULL"))
    # The same problem against several versions is said once, naming them all.
    by_problem: dict[tuple[str, str], list[int]] = {}
    for version, old in targets:
        if backward:
            for problem in read_problems(new, old):
                by_problem.setdefault(("backward", problem), []).append(version)
        if forward:
            for problem in read_problems(old, new):
                by_problem.setdefault(("forward", problem), []).append(version)
    problems = []
    for (direction, problem), versions in by_problem.items():
        numbers = ", ".join(str(version) for version in versions)
        which = f"version{'s' if len(versions) > 1 else ''} {numbers}"
        if direction == "backward":
            problems.append(f"new schema cannot read data written with {which}: {problem}")
        else:
            problems.append(f"{which} cannot read data written with the new schema: {problem}")
    return problems


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _named_types(schema: Any) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}

    def walk(node: Any, namespace: str | None) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, namespace)
        elif isinstance(node, Mapping):
            kind = node.get("type")
            if kind in ("record", "error", "enum", "fixed"):
                full = _full_name(str(node["name"]), node.get("namespace", namespace))
                found[full] = node
                found.setdefault(_short(full), node)
                namespace = full.rpartition(".")[0] or None
            for field in node.get("fields", []):
                walk(field["type"], namespace)
            for key in ("items", "values"):
                if key in node:
                    walk(node[key], namespace)
            if isinstance(kind, list | Mapping):
                walk(kind, namespace)

    walk(schema, None)
    return found


class _Resolver:
    def __init__(
        self, reader_names: dict[str, Mapping[str, Any]], writer_names: dict[str, Mapping[str, Any]]
    ) -> None:
        self.reader_names = reader_names
        self.writer_names = writer_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def _normal(self, schema: Any, names: dict[str, Mapping[str, Any]]) -> Any:
        """Named references replaced by their definition; ``{"type": "int"}`` by ``"int"``."""
        while True:
            if isinstance(schema, str):
                if schema in PRIMITIVES:
                    return schema
                named = names.get(schema) or names.get(_short(schema))
                if named is None:
                    return schema
                schema = named
            elif isinstance(schema, Mapping) and (
                schema.get("type") in PRIMITIVES or isinstance(schema.get("type"), list | Mapping)
            ):
                schema = schema["type"]
            else:
                return schema

    @staticmethod
    def _kind(schema: Any) -> str:
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            return "union"
        return str(schema["type"])

    def _label(self, schema: Any) -> str:
        if isinstance(schema, Mapping) and "name" in schema:
            return str(schema["name"])
        if isinstance(schema, list):
            return "union [" + ", ".join(self._label(b) for b in schema) + "]"
        return self._kind(schema)

    def _readable(self, reader: Any, writer: Any) -> bool:
        trial = _Resolver(self.reader_names, self.writer_names)
        trial._seen = set(self._seen)
        trial.resolve(reader, writer, "")
        return not trial.problems

    def resolve(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._normal(reader, self.reader_names)
        writer = self._normal(writer, self.writer_names)
        where = path or "the record"
        if isinstance(writer, list):
            for branch in writer:
                if not self._readable(reader, branch):
                    self.problems.append(
                        f"{where}: the writer's union branch {self._label(branch)} "
                        f"cannot be read as {self._label(reader)}"
                    )
            return
        if isinstance(reader, list):
            if not any(self._readable(branch, writer) for branch in reader):
                self.problems.append(
                    f"{where}: {self._label(writer)} matches no branch of {self._label(reader)}"
                )
            return
        reader_kind, writer_kind = self._kind(reader), self._kind(writer)
        if reader_kind != writer_kind:
            if reader_kind not in PROMOTIONS.get(writer_kind, set()):
                self.problems.append(
                    f"{where}: type changed from {self._label(writer)} to {self._label(reader)}"
                )
            return
        if reader_kind == "record":
            self._resolve_record(reader, writer, path)
        elif reader_kind == "array":
            self.resolve(reader["items"], writer["items"], f"{path}[]")
        elif reader_kind == "map":
            self.resolve(reader["values"], writer["values"], f"{path}{{}}")
        elif reader_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self.problems.append(
                    f"{where}: enum symbols {missing} were removed and the enum has no default"
                )
        elif reader_kind == "fixed" and reader.get("size") != writer.get("size"):
            self.problems.append(
                f"{where}: fixed size changed from {writer.get('size')} to {reader.get('size')}"
            )

    def _resolve_record(
        self, reader: Mapping[str, Any], writer: Mapping[str, Any], path: str
    ) -> None:
        reader_name, writer_name = _short(str(reader["name"])), _short(str(writer["name"]))
        aliases = {_short(str(alias)) for alias in reader.get("aliases", [])}
        if writer_name != reader_name and writer_name not in aliases:
            self.problems.append(
                f"{path or 'the record'}: record name changed from {writer_name} to {reader_name} "
                "without an alias"
            )
            return
        if (reader_name, writer_name) in self._seen:
            return  # recursive record: already being resolved further up
        self._seen.add((reader_name, writer_name))
        writer_fields = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            field_path = f"{path}.{name}" if path else name
            candidates = [name, *field.get("aliases", [])]
            match = next((writer_fields[c] for c in candidates if c in writer_fields), None)
            if match is not None:
                self.resolve(field["type"], match["type"], field_path)
            elif "default" not in field:
                self.problems.append(
                    f"field {field_path} is missing from the writer's schema and has no default "
                    "(add a default, or an alias naming the old field)"
                )
