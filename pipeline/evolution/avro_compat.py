"""Avro schema resolution rules, to say *why* two schemas are incompatible.

The registry is the authority on compatibility, but Apicurio's compatibility
endpoint answers only true or false (``verbose=true`` adds no messages), so
``pipeline schemas check`` explains a refusal with these rules: can a reader
with one schema read data written with another (Avro spec, "Schema Resolution")?

The rules agree with Apache Avro Java's ``SchemaCompatibility`` (the differential
test in ``tests/unit/evolution/test_avro_compat_oracle.py`` holds them to it), except where
the spec is silent and Avro's checker accepts what its own decoder or fastavro
cannot read; ``docs/schema-compatibility.md`` lists those cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
NAMED_KINDS = frozenset(("record", "error", "enum", "fixed"))
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
    resolver = _Resolver()
    problems = resolver.resolve(_Parsed(reader).root, _Parsed(writer).root, "")
    return list(dict.fromkeys(problems))  # a type pair met twice is reported once


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
    """A dotted name is already full; otherwise it takes ``namespace`` ("" or None: none)."""
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _short(full_name: str) -> str:
    return full_name.rpartition(".")[2]


def _namespace_of(full_name: str) -> str | None:
    return full_name.rpartition(".")[0] or None


@dataclass(eq=False)
class _Field:
    name: str
    aliases: tuple[str, ...]
    type: _Type
    has_default: bool


@dataclass(eq=False)
class _Named:
    """A record, enum or fixed, by its full name; references to it are this same object."""

    kind: str  # record | enum | fixed
    full_name: str
    aliases: frozenset[str]  # full names: a dotless alias takes the type's namespace
    fields: list[_Field] = field(default_factory=list)
    symbols: tuple[str, ...] = ()
    has_enum_default: bool = False
    size: int | None = None


@dataclass(frozen=True)
class _Array:
    items: _Type


@dataclass(frozen=True)
class _Map:
    values: _Type


@dataclass(frozen=True)
class _Union:
    branches: tuple[_Type, ...]


_Type = str | _Named | _Array | _Map | _Union


class _Parsed:
    """A JSON schema as a graph: every name resolved the way Avro's parser resolves it.

    A dotless reference is looked up in the namespace of the enclosing named type, then (as
    Apache Avro Java and fastavro do) in the null namespace; a nested definition without a
    namespace inherits the enclosing one.
    """

    def __init__(self, schema: Any) -> None:
        self._definitions: dict[str, tuple[Mapping[str, Any], str | None]] = {}
        self._collect(schema, None)
        self._converted: dict[str, _Named] = {}
        self.root = self._convert(schema, None)

    def _collect(self, node: Any, namespace: str | None) -> None:
        if isinstance(node, list):
            for branch in node:
                self._collect(branch, namespace)
        elif isinstance(node, Mapping):
            kind = node.get("type")
            if kind in NAMED_KINDS:
                full = _full_name(str(node["name"]), node.get("namespace", namespace))
                self._definitions.setdefault(full, (node, namespace))
                namespace = _namespace_of(full)
            for each in node.get("fields", []):
                self._collect(each["type"], namespace)
            for key in ("items", "values"):
                if key in node:
                    self._collect(node[key], namespace)
            if isinstance(kind, list | Mapping):
                self._collect(kind, namespace)

    def _lookup(self, reference: str, namespace: str | None) -> str | None:
        qualified = _full_name(reference, namespace)
        if qualified in self._definitions:
            return qualified
        return reference if "." not in reference and reference in self._definitions else None

    def _convert(self, node: Any, namespace: str | None) -> _Type:
        if isinstance(node, list):
            return _Union(tuple(self._convert(branch, namespace) for branch in node))
        if isinstance(node, str):
            if node in PRIMITIVES:
                return node
            full = self._lookup(node, namespace)
            return node if full is None else self._named(full)  # unknown: compared as a name
        kind = node["type"]
        if kind in NAMED_KINDS:
            return self._named(_full_name(str(node["name"]), node.get("namespace", namespace)))
        if kind == "array":
            return _Array(self._convert(node["items"], namespace))
        if kind == "map":
            return _Map(self._convert(node["values"], namespace))
        # {"type": "int", "logicalType": ...}, {"type": [...]}, {"type": "SomeName"}
        return self._convert(kind, namespace)

    def _named(self, full: str) -> _Named:
        if full in self._converted:
            return self._converted[full]
        node, _ = self._definitions[full]
        namespace = _namespace_of(full)
        kind = "record" if node["type"] == "error" else str(node["type"])
        aliases = frozenset(_full_name(str(alias), namespace) for alias in node.get("aliases", []))
        named = _Named(kind, full, aliases)
        self._converted[full] = named  # before the fields: a recursive field finds it
        if kind == "record":
            named.fields = [
                _Field(
                    str(each["name"]),
                    tuple(str(alias) for alias in each.get("aliases", [])),
                    self._convert(each["type"], namespace),
                    "default" in each,
                )
                for each in node["fields"]
            ]
        elif kind == "enum":
            named.symbols = tuple(str(symbol) for symbol in node["symbols"])
            named.has_enum_default = "default" in node
        else:
            named.size = int(node["size"])
        return named


def _label(schema: _Type) -> str:
    if isinstance(schema, _Named):
        return f"{schema.kind} {schema.full_name}"
    if isinstance(schema, _Array):
        return f"array<{_label(schema.items)}>"
    if isinstance(schema, _Map):
        return f"map<{_label(schema.values)}>"
    if isinstance(schema, _Union):
        return "union [" + ", ".join(_label(branch) for branch in schema.branches) + "]"
    return schema


def _same_name(reader: _Named, writer: _Named) -> bool:
    """Avro's rule: the unqualified names are equal, or a reader alias is the writer's full name."""
    return (
        _short(reader.full_name) == _short(writer.full_name) or writer.full_name in reader.aliases
    )


def _names_in_full(reader: _Type, writer: _Named) -> bool:
    """``reader`` is the named type of ``writer``'s full name, or has it as an alias."""
    return isinstance(reader, _Named) and (
        reader.full_name == writer.full_name or writer.full_name in reader.aliases
    )


def _matches(reader: _Type, writer: _Type) -> bool:
    """The spec's "match" that picks a reader union's branch: shallow for named types."""
    if isinstance(reader, _Union) or isinstance(writer, _Union):
        return True
    if isinstance(reader, _Array) and isinstance(writer, _Array):
        return _matches(reader.items, writer.items)
    if isinstance(reader, _Map) and isinstance(writer, _Map):
        return _matches(reader.values, writer.values)
    if isinstance(reader, _Named) and isinstance(writer, _Named):
        return (
            reader.kind == writer.kind
            and _same_name(reader, writer)
            and (reader.kind != "fixed" or reader.size == writer.size)
        )
    if isinstance(reader, str) and isinstance(writer, str):
        return reader == writer or reader in PROMOTIONS.get(writer, set())
    return False


class _Resolver:
    def __init__(self) -> None:
        # Problems of each named pair already resolved; None while it is being resolved (a
        # recursive type meets itself: assume it resolves, as Avro does, until shown otherwise).
        self._named_results: dict[tuple[str, str], list[str] | None] = {}

    def resolve(
        self, reader: _Type, writer: _Type, path: str, *, in_writer_union: bool = False
    ) -> list[str]:
        where = path or "the record"
        if isinstance(writer, _Union):
            problems = []
            for branch in writer.branches:
                branch_problems = self.resolve(reader, branch, path, in_writer_union=True)
                if (
                    branch_problems
                    and not isinstance(reader, _Union)
                    and not _matches(reader, branch)
                ):
                    problems.append(
                        f"{where}: the writer's union branch {_label(branch)} "
                        f"cannot be read as {_label(reader)}"
                    )
                else:
                    problems.extend(branch_problems)
            return problems
        if isinstance(reader, _Union):
            return self._resolve_union(reader, writer, path, by_full_name=not in_writer_union)
        if isinstance(reader, _Named) and isinstance(writer, _Named) and reader.kind == writer.kind:
            return self._resolve_named(reader, writer, path)
        if isinstance(reader, _Array) and isinstance(writer, _Array):
            return self.resolve(reader.items, writer.items, f"{path}[]")
        if isinstance(reader, _Map) and isinstance(writer, _Map):
            return self.resolve(reader.values, writer.values, f"{path}{{}}")
        if isinstance(reader, str) and isinstance(writer, str) and _matches(reader, writer):
            return []
        return [f"{where}: type changed from {_label(writer)} to {_label(reader)}"]

    def _resolve_union(
        self, reader: _Union, writer: _Type, path: str, *, by_full_name: bool
    ) -> list[str]:
        """The spec: the first branch that matches the writer is resolved, the others unused.

        Avro's checker accepts a union if *any* branch can read the writer; its decoder and
        fastavro pick one branch and fail if it cannot. Avro Java's decoder also finds an
        enum's or a fixed's branch by full name (or alias) when the writer's type is not in
        a union of its own (``by_full_name``): docs/schema-compatibility.md.
        """
        where = path or "the record"
        matching = [branch for branch in reader.branches if _matches(branch, writer)]
        if not matching:
            return [f"{where}: {_label(writer)} matches no branch of {_label(reader)}"]
        first, *later = matching
        if (
            by_full_name
            and isinstance(writer, _Named)
            and writer.kind != "record"
            and not any(_names_in_full(branch, writer) for branch in matching)
        ):
            return [
                f"{where}: {_label(writer)} matches the reader's union branch {_label(first)} "
                f"by its short name only, and Avro Java's decoder finds a union branch of an "
                f"{writer.kind} by its full name: give the branch the alias "
                f"{writer.full_name!r}, or the writer's namespace"
            ]
        problems = self.resolve(first, writer, path)
        if not problems:
            return []
        readable = next((b for b in later if not self.resolve(b, writer, path)), None)
        if readable is not None:
            return [
                f"{where}: {_label(writer)} is read as {_label(first)}, the first branch of "
                f"the reader's union that matches it, which cannot read it "
                f"({'; '.join(problems)}); a later branch, {_label(readable)}, could "
                f"(move it before {_label(first)})"
            ]
        return problems

    def _resolve_named(self, reader: _Named, writer: _Named, path: str) -> list[str]:
        key = (reader.full_name, writer.full_name)
        if key in self._named_results:
            return self._named_results[key] or []
        self._named_results[key] = None
        where = path or "the record"
        problems: list[str] = []
        if not _same_name(reader, writer):
            problems.append(
                f"{where}: {reader.kind} name changed from {writer.full_name} to "
                f'{reader.full_name} without an alias (add the alias "{writer.full_name}" '
                f"to {reader.full_name})"
            )
        elif reader.kind == "record":
            problems = self._resolve_fields(reader, writer, path)
        elif reader.kind == "enum":
            missing = [s for s in writer.symbols if s not in reader.symbols]
            if missing and not reader.has_enum_default:
                problems.append(
                    f"{where}: enum {reader.full_name} lost the writer's symbols {missing} "
                    "and has no default (keep them, or give the enum a default symbol)"
                )
        elif reader.size != writer.size:
            problems.append(
                f"{where}: size of fixed {reader.full_name} changed from "
                f"{writer.size} to {reader.size}"
            )
        self._named_results[key] = problems
        return problems

    def _resolve_fields(self, reader: _Named, writer: _Named, path: str) -> list[str]:
        """Each reader field reads the writer field of its name, else of one of its aliases.

        Where that is ambiguous (the spec is silent, decoders differ) the schema is refused.
        """
        writer_fields = {each.name: each for each in writer.fields}
        problems: list[str] = []
        sources: dict[str, list[_Field]] = {}  # writer field -> the reader fields it would feed
        for each in reader.fields:
            field_path = f"{path}.{each.name}" if path else each.name
            hits = list(dict.fromkeys(n for n in (each.name, *each.aliases) if n in writer_fields))
            if len(hits) > 1:
                problems.append(
                    f"field {field_path} of record {reader.full_name} names several fields of "
                    f"the writer's record {writer.full_name} ({', '.join(hits)}) by its name and "
                    "aliases (keep one)"
                )
            elif hits:
                sources.setdefault(hits[0], []).append(each)
            elif not each.has_default:
                problems.append(
                    f"field {field_path} is missing from the writer's schema and has no default "
                    f"(add a default to field {each.name} of record {reader.full_name}, or an "
                    "alias naming the old field)"
                )
        for source, readers in sources.items():
            if len(readers) > 1:
                names = ", ".join(each.name for each in readers)
                problems.append(
                    f"{path or 'the record'}: field {source} of the writer's record "
                    f"{writer.full_name} is read by more than one field of record "
                    f"{reader.full_name} ({names}) through a name or alias; decoders disagree "
                    "on which gets it (drop the alias)"
                )
                continue
            (each,) = readers
            field_path = f"{path}.{each.name}" if path else each.name
            problems.extend(self.resolve(each.type, writer_fields[source].type, field_path))
        return problems
