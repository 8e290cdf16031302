"""The schema-evolution workflow: list, diff, check, register, compat.

Compares the local schemas (``schemas/``, through the Catalog) with what the
registry holds under each subject. The click layer is ``pipeline.evolution.cli``;
this module only computes and talks to the registry.

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

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from pipeline.evolution.avro_compat import compatibility_problems
from pipeline.evolution.schema_diff import FieldChange, field_changes
from pipeline.serde.catalog import TopicSchema

HTTP_NOT_FOUND = 404


class RegistryError(RuntimeError):
    """The registry could not answer; the message names the subject and the cause."""


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
    """The workflow over one registry client; every method handles one subject."""

    def __init__(self, client: SchemaRegistryClient) -> None:
        self.client = client

    def state(self, topic_schema: TopicSchema) -> SubjectState:
        subject = topic_schema.subject
        try:
            numbers = self.client.get_versions(subject)
        except SchemaRegistryError as exc:
            if exc.http_status_code != HTTP_NOT_FOUND:
                raise RegistryError(f"{subject}: cannot list versions: {exc}") from exc
            numbers = []
        except Exception as exc:
            raise RegistryError(f"{subject}: registry unreachable: {exc!r}") from exc
        versions = [self._version(subject, number) for number in sorted(numbers)]
        return SubjectState(topic_schema, versions, self.registry_level(subject))

    def _version(self, subject: str, number: int) -> RegisteredVersion:
        try:
            registered = self.client.get_version(subject, number)
        except Exception as exc:
            raise RegistryError(f"{subject}: cannot read version {number}: {exc}") from exc
        text = registered.schema.schema_str if registered.schema else None
        if text is None or registered.schema_id is None:
            raise RegistryError(f"{subject}: version {number} came back without a schema")
        return RegisteredVersion(number, int(registered.schema_id), json.loads(text))

    def registry_level(self, subject: str) -> str:
        """The level the registry applies to ``subject``: its own, else the global one."""
        try:
            return str(self.client.get_compatibility(subject)).upper()
        except SchemaRegistryError as exc:
            # Confluent answers 404 for a subject without its own level (Apicurio
            # answers with the global level instead).
            if exc.http_status_code != HTTP_NOT_FOUND:
                raise RegistryError(f"{subject}: cannot read compatibility: {exc}") from exc
        except Exception as exc:
            raise RegistryError(f"{subject}: registry unreachable: {exc!r}") from exc
        try:
            return str(self.client.get_compatibility()).upper()
        except Exception as exc:
            raise RegistryError(f"cannot read the global compatibility level: {exc}") from exc

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
        try:
            registry_says = self.client.test_compatibility(
                entry.subject, Schema(entry.schema_str, schema_type="AVRO"), verbose=True
            )
        except Exception as exc:
            raise RegistryError(f"{entry.subject}: compatibility test failed: {exc}") from exc
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
        try:
            self.client.set_compatibility(subject_name=subject, level=level)
        except Exception as exc:
            raise RegistryError(f"{subject}: cannot set compatibility {level}: {exc}") from exc
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
            self.client.register_schema(entry.subject, Schema(entry.schema_str, schema_type="AVRO"))
        except SchemaRegistryError as exc:
            refused = CheckResult(
                state, "incompatible", [f"the registry refused it: {exc.error_message}"]
            )
            return RegisterResult(refused, "refused", None, level_change)
        except Exception as exc:
            raise RegistryError(f"{entry.subject}: cannot register: {exc!r}") from exc
        registered = self.state(entry).local_version
        return RegisterResult(result, "registered", registered, level_change)
