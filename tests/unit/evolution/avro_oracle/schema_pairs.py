"""Hypothesis strategies for pairs of valid, related Avro schemas, to differ-test a checker.

A writer schema is drawn as a model (named types are objects, so references and recursion are
identities), the reader is a copy changed by a few schema-evolution steps (rename with or without
an alias, move to another namespace, add/drop/rename fields, toggle defaults, promote or replace a
type, wrap in or edit a union, change enum symbols or a fixed size), and both are written out as
JSON in one of the several spellings Avro allows for the same names: dotted full names or a
``namespace`` attribute, inherited namespaces, dotless references resolved in the enclosing
namespace. Names come from a tiny vocabulary so that short names collide across namespaces.
Half the pairs are swapped, so each step is seen in both directions.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

SHORT_NAMES = ("A", "B", "E")
NAMESPACES = (None, "a", "b", "a.b")
FIELD_NAMES = ("f", "g", "h", "k")
SYMBOLS = ("S", "T", "U", "V")
PRIMITIVES = ("null", "boolean", "int", "long", "float", "double", "bytes", "string")
MAX_DEPTH = 3


@dataclass(eq=False)
class Named:
    kind: str  # record | enum | fixed
    name: str
    namespace: str | None
    aliases: list[str] = field(default_factory=list)
    fields: list[Field] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)
    enum_default: str | None = None
    size: int = 4

    @property
    def full_name(self) -> str:
        return f"{self.namespace}.{self.name}" if self.namespace else self.name


@dataclass(eq=False)
class Field:
    name: str
    type: Type
    has_default: bool
    aliases: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Array:
    items: Type


@dataclass(eq=False)
class Map:
    values: Type


@dataclass(eq=False)
class Union:
    branches: list[Type]


Type = str | Named | Array | Map | Union
Draw = Callable[[st.SearchStrategy[Any]], Any]


class Invalid(Exception):
    """The model cannot be written as a valid schema (a clash that a step introduced)."""


@st.composite
def schema_pairs(draw: Draw) -> tuple[Any, Any]:
    """(reader, writer) as JSON schemas, both valid."""
    pool: list[Named] = []
    writer = _draw_type(draw, pool, 0, top=True)
    reader = copy.deepcopy(writer)
    for _ in range(draw(st.integers(0, 3))):
        _evolve(draw, reader)
    if draw(st.booleans()):
        reader, writer = writer, reader
    try:
        return _to_json(draw, reader), _to_json(draw, writer)
    except Invalid:
        assume(False)
        raise  # unreachable: assume(False) raises


def _unused_name(draw: Draw, taken: set[str]) -> tuple[str, str | None] | None:
    free = [
        (name, namespace)
        for name in SHORT_NAMES
        for namespace in NAMESPACES
        if (f"{namespace}.{name}" if namespace else name) not in taken
    ]
    return draw(st.sampled_from(free)) if free else None


def _draw_type(draw: Draw, pool: list[Named], depth: int, top: bool = False) -> Type:
    kinds = ["primitive", "primitive", "record", "enum", "fixed"]
    if depth < MAX_DEPTH:
        kinds += ["array", "map", "union", "union"]
    if pool:
        kinds += ["reference", "reference"]
    kind = "record" if top and draw(st.integers(0, 9)) < 8 else draw(st.sampled_from(kinds))
    if kind == "primitive":
        return str(draw(st.sampled_from(PRIMITIVES)))
    if kind == "reference":
        return draw(st.sampled_from(pool))  # type: ignore[no-any-return]
    if kind == "array":
        return Array(_draw_type(draw, pool, depth + 1))
    if kind == "map":
        return Map(_draw_type(draw, pool, depth + 1))
    if kind == "union":
        return _draw_union(draw, pool, depth)
    return _draw_named(draw, pool, kind, depth)


def _draw_union(draw: Draw, pool: list[Named], depth: int) -> Union:
    branches: list[Type] = []
    if draw(st.booleans()):
        branches.append("null")  # the common nullable field
    for _ in range(draw(st.integers(1, 3))):
        branch = _draw_type(draw, pool, depth + 1)
        if not isinstance(branch, Union) and _branch_key(branch) not in map(_branch_key, branches):
            branches.append(branch)
    return Union(branches)


def _draw_named(draw: Draw, pool: list[Named], kind: str, depth: int) -> Type:
    name = _unused_name(draw, {named.full_name for named in pool})
    if name is None:
        return "int"
    named = Named(kind, *name)
    pool.append(named)  # before its fields, so they may refer back to it (recursion)
    if kind == "record":
        for field_name in draw(st.lists(st.sampled_from(FIELD_NAMES), max_size=3, unique=True)):
            named.fields.append(
                Field(field_name, _draw_type(draw, pool, depth + 1), draw(st.booleans()))
            )
    elif kind == "enum":
        named.symbols = draw(
            st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=3, unique=True)
        )
        named.enum_default = draw(st.sampled_from([None, *named.symbols]))
    else:
        named.size = draw(st.integers(1, 3))
    return named


def _evolve(draw: Draw, root: Type) -> None:
    """One schema-evolution step somewhere in ``root``."""
    nameds = list(_named_types(root))
    records = [named for named in nameds if named.kind == "record"]
    steps = ["retype"]
    if nameds:
        steps += ["rename", "rename", "alias"]
    if records:
        steps += ["add_field", "drop_field", "rename_field", "field_alias", "toggle_default"]
    if any(named.kind == "enum" for named in nameds):
        steps += ["symbols"]
    if any(named.kind == "fixed" for named in nameds):
        steps += ["size"]
    step = draw(st.sampled_from(steps))
    taken = {named.full_name for named in nameds}
    if step == "rename":
        named = draw(st.sampled_from(nameds))
        old_full, old_short = named.full_name, named.name
        new = _unused_name(draw, taken)
        if new is None:
            return
        named.name, named.namespace = new
        alias = draw(st.sampled_from([None, old_full, old_short, "B", "a.E"]))
        if alias is not None and alias not in named.aliases:
            named.aliases.append(alias)
    elif step == "alias":
        named = draw(st.sampled_from(nameds))
        alias = draw(st.sampled_from(["A", "B", "E", "a.A", "b.E", "a.b.B"]))
        if alias not in named.aliases:
            named.aliases.append(alias)
    elif step == "add_field":
        record = draw(st.sampled_from(records))
        free = [name for name in FIELD_NAMES if name not in {f.name for f in record.fields}]
        if free:
            pool = list(nameds)
            added = Field(
                draw(st.sampled_from(free)), _draw_type(draw, pool, 1), draw(st.booleans())
            )
            # An alias naming a field the record keeps: two fields then claim one writer field.
            kept = [each.name for each in record.fields]
            if kept and draw(st.integers(0, 3)) == 0:
                added.aliases.append(draw(st.sampled_from(kept)))
            record.fields.insert(draw(st.integers(0, len(record.fields))), added)
    elif step == "drop_field":
        record = draw(st.sampled_from(records))
        if record.fields:
            record.fields.pop(draw(st.integers(0, len(record.fields) - 1)))
    elif step == "rename_field":
        record = draw(st.sampled_from(records))
        free = [name for name in FIELD_NAMES if name not in {f.name for f in record.fields}]
        if record.fields and free:
            renamed = draw(st.sampled_from(record.fields))
            old = renamed.name
            renamed.name = draw(st.sampled_from(free))
            renamed.aliases = [a for a in renamed.aliases if a != renamed.name]
            if draw(st.booleans()) and old not in renamed.aliases:
                renamed.aliases.append(old)
    elif step == "field_alias":
        # Aliases that may name a field the writer has, or one another reader field takes.
        record = draw(st.sampled_from(records))
        if record.fields:
            aliased = draw(st.sampled_from(record.fields))
            alias = draw(st.sampled_from([n for n in FIELD_NAMES if n != aliased.name]))
            if alias not in aliased.aliases:
                aliased.aliases.append(alias)
    elif step == "toggle_default":
        record = draw(st.sampled_from(records))
        if record.fields:
            toggled = draw(st.sampled_from(record.fields))
            toggled.has_default = not toggled.has_default
    elif step == "symbols":
        enum = draw(st.sampled_from([named for named in nameds if named.kind == "enum"]))
        enum.symbols = draw(st.lists(st.sampled_from(SYMBOLS), min_size=1, max_size=4, unique=True))
        enum.enum_default = draw(st.sampled_from([None, *enum.symbols]))
    elif step == "size":
        fixed = draw(st.sampled_from([named for named in nameds if named.kind == "fixed"]))
        fixed.size = draw(st.integers(1, 3))
    else:
        _retype(draw, root, nameds)


def _retype(draw: Draw, root: Type, nameds: list[Named]) -> None:
    """Replace one type slot: a promotion, a fresh type, a nullable wrap, or a union edit."""
    slots = list(_slots(root))
    if not slots:
        return
    get, put, in_union = draw(st.sampled_from(slots))
    old = get()
    how = draw(st.sampled_from(["primitive", "fresh", "wrap", "union_edit"]))
    if how == "primitive":
        put(str(draw(st.sampled_from(PRIMITIVES))))
    elif how == "fresh":
        fresh = _draw_type(draw, list(nameds), 1)
        if not (in_union and isinstance(fresh, Union)):
            put(fresh)
    elif how == "wrap" and not in_union and not isinstance(old, Union):
        other = draw(st.sampled_from(["null", "string", "long"]))
        if other != old:
            put(Union([other, old] if draw(st.booleans()) else [old, other]))
    elif how == "union_edit" and isinstance(old, Union):
        branches = list(old.branches)
        edit = draw(st.sampled_from(["reverse", "drop", "add"]))
        if edit == "reverse":
            branches.reverse()
        elif edit == "drop" and len(branches) > 1:
            branches.pop(draw(st.integers(0, len(branches) - 1)))
        elif edit == "add":
            added = _draw_type(draw, list(nameds), MAX_DEPTH)
            if not isinstance(added, Union):
                branches.insert(draw(st.integers(0, len(branches))), added)
        old.branches = branches


Slot = tuple[Callable[[], Type], Callable[[Type], None], bool]


def _slots(root: Type) -> Iterator[Slot]:
    """Every place that holds a type (field types, items, values, union branches)."""
    seen: set[int] = set()

    def walk(node: Type) -> Iterator[Slot]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, Named):
            for each in node.fields:
                yield (lambda f=each: f.type), (lambda t, f=each: setattr(f, "type", t)), False
                yield from walk(each.type)
        elif isinstance(node, Array):
            yield (lambda: node.items), (lambda t: setattr(node, "items", t)), False
            yield from walk(node.items)
        elif isinstance(node, Map):
            yield (lambda: node.values), (lambda t: setattr(node, "values", t)), False
            yield from walk(node.values)
        elif isinstance(node, Union):
            for index, branch in enumerate(node.branches):
                yield (
                    (lambda i=index: node.branches[i]),
                    (lambda t, i=index: node.branches.__setitem__(i, t)),
                    True,
                )
                yield from walk(branch)

    return walk(root)


def _named_types(root: Type) -> Iterator[Named]:
    seen: set[int] = set()

    def walk(node: Type) -> Iterator[Named]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, Named):
            yield node
            for each in node.fields:
                yield from walk(each.type)
        elif isinstance(node, Array):
            yield from walk(node.items)
        elif isinstance(node, Map):
            yield from walk(node.values)
        elif isinstance(node, Union):
            for branch in node.branches:
                yield from walk(branch)

    return walk(root)


def _branch_key(branch: Type) -> str:
    if isinstance(branch, Named):
        return branch.full_name
    if isinstance(branch, Array):
        return "array"
    if isinstance(branch, Map):
        return "map"
    return str(branch)


def _to_json(draw: Draw, root: Type) -> Any:
    """The model as a JSON schema, names spelled in a drawn way; :class:`Invalid` if it clashes."""
    by_full_name: dict[str, Named] = {}
    for named in _named_types(root):
        if by_full_name.setdefault(named.full_name, named) is not named:
            raise Invalid(f"two types named {named.full_name}")
    defined: set[int] = set()
    # Records whose fields are being written: Avro cannot check a default against them yet.
    open_records: set[int] = set()

    def resolves_to(reference: str, namespace: str | None, target: Named) -> bool:
        """Does a dotless reference find ``target``, for the spec and for Avro Java alike?

        The spec looks in the enclosing namespace only. Java 1.12 looks there, then in the null
        namespace, among the types defined so far (a record counts once its fields are parsed),
        and only then waits for a type of the enclosing namespace to be defined.
        """
        qualified = by_full_name.get(f"{namespace}.{reference}") if namespace else None
        if qualified is not None:
            in_progress = id(qualified) in open_records
            return qualified is target and not (in_progress and reference in by_full_name)
        if namespace and id(target) in open_records:
            return False
        return by_full_name.get(reference) is target

    def write(node: Type, namespace: str | None) -> Any:
        if isinstance(node, str):
            return node
        if isinstance(node, Array):
            return {"type": "array", "items": write(node.items, namespace)}
        if isinstance(node, Map):
            return {"type": "map", "values": write(node.values, namespace)}
        if isinstance(node, Union):
            keys = [_branch_key(branch) for branch in node.branches]
            if not node.branches or len(set(keys)) < len(keys):
                raise Invalid(f"union with branches {keys}")
            return [write(branch, namespace) for branch in node.branches]
        if id(node) in defined:
            short_ok = resolves_to(node.name, namespace, node)
            if short_ok and (node.namespace is None or draw(st.booleans())):
                return node.name
            if node.namespace is None:
                raise Invalid(f"{node.name} cannot be referred to from namespace {namespace}")
            return node.full_name
        defined.add(id(node))
        return {"type": node.kind, **spell_name(node, namespace), **body(node)}

    def spell_name(node: Named, namespace: str | None) -> dict[str, Any]:
        spellings: list[dict[str, Any]] = []
        if node.namespace is None:
            spellings.append(
                {"name": node.name} if namespace is None else {"name": node.name, "namespace": ""}
            )
        else:
            spellings.append({"name": node.full_name})
            spellings.append({"name": node.name, "namespace": node.namespace})
            spellings.append({"name": node.full_name, "namespace": "ignored.when.dotted"})
            if namespace == node.namespace:
                spellings.append({"name": node.name})
        return dict(draw(st.sampled_from(spellings)))

    def body(node: Named) -> dict[str, Any]:
        extra: dict[str, Any] = {"aliases": node.aliases} if node.aliases else {}
        if node.kind == "enum":
            if not node.symbols:
                raise Invalid("enum without symbols")
            if node.enum_default is not None:
                if node.enum_default not in node.symbols:
                    raise Invalid("enum default not a symbol")
                extra["default"] = node.enum_default
            return {"symbols": node.symbols, **extra}
        if node.kind == "fixed":
            return {"size": node.size, **extra}
        names = [each.name for each in node.fields]
        if len(set(names)) < len(names):
            raise Invalid(f"fields {names}")
        fields = []
        open_records.add(id(node))
        for each in node.fields:
            written: dict[str, Any] = {"name": each.name, "type": write(each.type, node.namespace)}
            if each.aliases:
                written["aliases"] = each.aliases
            if each.has_default:
                # No default Avro can check (a record being defined): leave it out.
                with contextlib.suppress(Invalid):
                    written["default"] = _default(each.type, open_records)
            fields.append(written)
        open_records.discard(id(node))
        return {"fields": fields, **extra}

    return write(root, None)


def _default(node: Type, open_records: set[int]) -> Any:
    """A valid default value for ``node`` (a union's is its first branch's)."""
    if isinstance(node, str):
        return {
            "null": None,
            "boolean": True,
            "int": 1,
            "long": 2,
            "float": 0.5,
            "double": 1.5,
            "bytes": "b",
            "string": "s",
        }[node]
    if isinstance(node, Array):
        return []
    if isinstance(node, Map):
        return {}
    if isinstance(node, Union):
        return _default(node.branches[0], open_records)
    if node.kind == "enum":
        return node.symbols[0]
    if node.kind == "fixed":
        return "\u0000" * node.size
    if id(node) in open_records:
        raise Invalid(f"a default of record {node.full_name} inside its own definition")
    inner = open_records | {id(node)}
    return {each.name: _default(each.type, inner) for each in node.fields}
