"""The schema-evolution workflow: list, diff, check, register, compat.

Compares the local schemas (``schemas/``, through the Catalog) with what the
registry holds under each subject. The click layer is ``pipeline.evolution.cli``;
this module only computes, and asks the registry through
``pipeline.serde.registry.SchemaRegistry`` (whose failures are
``RegistryUnavailable``, already naming the subject and the cause).

The registry is the authority on compatibility: ``check`` asks its compatibility
endpoint. Because a registry may give no reasons (Apicurio answers a bare
``is_compatible``), ``check`` also applies the Avro resolution rules locally
under the level the mapping file sets, which both explains a refusal and catches
a change that the mapping's level forbids before the registry's level is raised
to it. A schema is refused when either says no.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.evolution.avro_compat import compatibility_problems
from pipeline.evolution.schema_diff import FieldChange, field_changes
from pipeline.serde.catalog import TopicSchema
from pipeline.serde.errors import SchemaRejected
from pipeline.serde.registry import SchemaRegistry


@dataclass(frozen=True)
class RegisteredVersion:
    version: int
    schema_id: int
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class SubjectState:
    """A subject as the registry holds it, next to the local schema."""

    topic_schema: TopicSchema
    versions: Sequence[RegisteredVersion]  # oldest first
    registry_level: str

    @property
    def latest(self) -> RegisteredVersion | None:
        return self.versions[-1] if self.versions else None

    @property
    def local_version(self) -> RegisteredVersion | None:
        """The registered version equal to the local schema, if any."""
        local = self.topic_schema.schema
        return next((v for v in reversed(self.versions) if v.schema == local), None)


@dataclass(frozen=True)
class CheckResult:
    state: SubjectState
    verdict: str  # new subject | unchanged (version N) | compatible | incompatible
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict != "incompatible"


@dataclass(frozen=True)
class RegisterResult:
    check: CheckResult
    action: str  # registered | unchanged | refused
    version: RegisteredVersion | None
    level_change: tuple[str, str] | None  # (before, after) when the level was set


class SchemaWorkflow:
    """The workflow over one registry; every method handles one subject."""

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry

    def state(self, topic_schema: TopicSchema) -> SubjectState:
        subject = topic_schema.subject
        versions = [self._version(subject, number) for number in self.registry.versions(subject)]
        return SubjectState(topic_schema, versions, self.registry_level(subject))

    def _version(self, subject: str, number: int) -> RegisteredVersion:
        schema_id, text = self.registry.version(subject, number)
        return RegisteredVersion(number, schema_id, json.loads(text))

    def registry_level(self, subject: str) -> str:
        """The level the registry applies to ``subject``: its own, else the global one."""
        own = self.registry.level(subject)
        return own if own is not None else self.registry.global_level()

    def diff(self, state: SubjectState) -> list[FieldChange]:
        """Local schema against the registry's latest version ([] when equal or unregistered)."""
        if state.latest is None:
            return []
        return field_changes(state.latest.schema, state.topic_schema.schema)

    def check(self, state: SubjectState) -> CheckResult:
        entry = state.topic_schema
        if not state.versions:
            return CheckResult(state, "new subject")
        same = state.local_version
        if same is not None:
            return CheckResult(state, f"unchanged (version {same.version})")
        notes = []
        if state.registry_level != entry.compatibility:
            notes.append(
                f"the registry applies {state.registry_level}, subjects.yaml says "
                f"{entry.compatibility} (register sets it)"
            )
        problems = compatibility_problems(
            entry.compatibility,
            entry.schema,
            [(version.version, version.schema) for version in state.versions],
        )
        registry_says = self.registry.is_compatible(entry.subject, entry.schema_str)
        if not registry_says and not problems:
            problems.append(
                f"the registry refuses it under {state.registry_level} (it gave no reason)"
            )
        if registry_says and problems:
            notes.append(f"the registry alone would accept it under {state.registry_level}")
        return CheckResult(state, "incompatible" if problems else "compatible", problems, notes)

    def set_level(self, subject: str, level: str) -> tuple[str, str] | None:
        """Set ``subject``'s level; (before, after) if it changed, None if it already was."""
        before = self.registry_level(subject)
        if before == level:
            return None
        self.registry.set_level(subject, level)
        return before, level

    def register(self, state: SubjectState) -> RegisterResult:
        """Register the local schema as a new version unless check refuses it; idempotent."""
        entry = state.topic_schema
        result = self.check(state)
        if not result.ok:
            return RegisterResult(result, "refused", None, None)
        level_change = self.set_level(entry.subject, entry.compatibility)
        if state.local_version is not None:
            return RegisterResult(result, "unchanged", state.local_version, level_change)
        try:
            self.registry.register(entry.subject, entry.schema_str)
        except SchemaRejected as exc:
            refused = CheckResult(state, "incompatible", [exc.reason])
            return RegisterResult(refused, "refused", None, level_change)
        registered = self.state(entry).local_version
        return RegisterResult(result, "registered", registered, level_change)
