"""``pipeline schemas``: list, diff, check, register and compat, for people and CI.

Exit status: 0 when every subject is fine, 1 when a schema is incompatible (or the
registry cannot be reached, or the schemas directory is unusable).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import click

from pipeline import preflight
from pipeline.evolution.workflow import CheckResult, SchemaWorkflow, SubjectState
from pipeline.serde.catalog import Catalog, CatalogError, TopicSchema
from pipeline.serde.errors import RegistryUnavailable
from pipeline.serde.registry import SchemaRegistry
from pipeline.settings import Settings


@dataclass(frozen=True)
class Context:
    catalog: Catalog
    workflow: SchemaWorkflow
    topics: tuple[str, ...]

    def selected(self) -> Iterator[TopicSchema]:
        """The catalog's entries, in mapping order, limited to ``--topic`` if given."""
        unknown = [topic for topic in self.topics if topic not in self.catalog.topics]
        if unknown:
            raise click.UsageError(f"no such topic in subjects.yaml: {', '.join(unknown)}")
        for entry in self.catalog:
            if not self.topics or entry.topic in self.topics:
                yield entry

    def states(self) -> Iterator[SubjectState]:
        for entry in self.selected():
            try:
                yield self.workflow.state(entry)
            except RegistryUnavailable as exc:
                raise click.ClickException(exc.reason) from exc


@click.group()
@click.option(
    "--schemas-dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Directory with subjects.yaml and the .avsc files [default: PIPELINE_SCHEMA_DIR, "
    "else the packaged schemas].",
)
@click.option(
    "--topic-prefix",
    help="Prefix of every topic and subject [default: PIPELINE_TOPIC_PREFIX, else none].",
)
@click.option("--registry-url", help="Registry URL [default: PIPELINE_SCHEMA_REGISTRY_URL].")
@click.option(
    "--topic",
    "topics",
    multiple=True,
    help="Only this topic, named without the prefix (repeatable) [default: all].",
)
@click.pass_context
def schemas(
    ctx: click.Context,
    schemas_dir: Path | None,
    topic_prefix: str | None,
    registry_url: str | None,
    topics: tuple[str, ...],
) -> None:
    """Compare, check and register the Avro schemas of every topic (subject <topic>-value)."""
    settings = Settings.from_env()
    if registry_url:
        settings = replace(settings, schema_registry_url=registry_url.rstrip("/"))
    preflight.check(settings, kafka=False)
    prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
    try:
        catalog = Catalog.load(schemas_dir or settings.schema_dir, topic_prefix=prefix)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from exc
    registry = SchemaRegistry.from_settings(settings)
    ctx.obj = Context(catalog, SchemaWorkflow(registry), tuple(prefix + t for t in topics))
    ctx.call_on_close(registry.close)


@schemas.command("list")
@click.pass_obj
def list_subjects(context: Context) -> None:
    """Each topic's record, subject, levels, and whether the local schema is registered."""
    click.echo(f"schemas: {context.catalog.schema_dir}")
    for state in context.states():
        entry = state.topic_schema
        latest = state.latest
        if latest is None:
            where = "not registered"
        elif state.local_version is not None:
            where = f"registered as version {state.local_version.version}"
            if state.local_version is not latest:
                where += f" (latest is {latest.version})"
        else:
            where = f"changed since version {latest.version} (run check, then register)"
        level = entry.compatibility
        if state.registry_level != level:
            level += f" (registry: {state.registry_level})"
        click.echo(f"{entry.subject:<28} {entry.record_name:<28} {level:<24} {where}")


@schemas.command()
@click.pass_obj
def diff(context: Context) -> None:
    """Field by field: local schema against the registry's latest version."""
    for state in context.states():
        entry = state.topic_schema
        if state.latest is None:
            click.echo(f"{entry.subject}: not registered yet (the whole schema is new)")
            continue
        changes = context.workflow.diff(state)
        if not changes and state.local_version is state.latest:
            click.echo(f"{entry.subject}: same as version {state.latest.version}")
        elif not changes:
            click.echo(f"{entry.subject}: no field changes against version {state.latest.version}")
        else:
            click.echo(f"{entry.subject}: against version {state.latest.version}")
            for change in changes:
                click.echo(f"  {change}")


def _echo_check(result: CheckResult) -> None:
    entry = result.state.topic_schema
    marker = "ok " if result.ok else "ERR"
    click.echo(f"{marker} {entry.subject}: {result.verdict}, under {entry.compatibility}")
    for note in result.notes:
        click.echo(f"      note: {note}")
    for problem in result.problems:
        click.echo(f"      {problem}")


@schemas.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Would the registry accept the local schemas? Non-zero exit if any is incompatible."""
    context: Context = ctx.obj
    failed = 0
    for state in context.states():
        try:
            result = context.workflow.check(state)
        except RegistryUnavailable as exc:
            raise click.ClickException(exc.reason) from exc
        _echo_check(result)
        failed += not result.ok
    if failed:
        click.echo(f"{failed} subject(s) incompatible: fix the schema or its compatibility level")
        ctx.exit(1)


@schemas.command()
@click.pass_context
def register(ctx: click.Context) -> None:
    """Register local schemas as new versions and set each subject's level (idempotent)."""
    context: Context = ctx.obj
    refused = changed = 0
    # Our records are self-contained (no schema references), so mapping order is a
    # valid dependency order.
    for state in context.states():
        subject = state.topic_schema.subject
        try:
            result = context.workflow.register(state)
        except RegistryUnavailable as exc:
            raise click.ClickException(exc.reason) from exc
        if result.level_change is not None:
            before, after = result.level_change
            click.echo(f"{subject}: compatibility {before} -> {after}")
            changed += 1
        if result.action == "refused":
            _echo_check(result.check)
            refused += 1
        elif result.action == "registered":
            assert result.version is not None
            click.echo(
                f"{subject}: registered version {result.version.version} "
                f"(schema id {result.version.schema_id})"
            )
            changed += 1
        else:
            assert result.version is not None
            click.echo(
                f"{subject}: unchanged (version {result.version.version}, "
                f"schema id {result.version.schema_id})"
            )
    if refused:
        click.echo(f"{refused} subject(s) refused; nothing registered for them")
        ctx.exit(1)
    if not changed:
        click.echo("nothing to do: the registry already matches the local schemas")


@schemas.command()
@click.option("--set", "apply", is_flag=True, help="Set the registry's levels to subjects.yaml's.")
@click.pass_obj
def compat(context: Context, apply: bool) -> None:
    """Each subject's compatibility level: subjects.yaml against the registry (or --set it)."""
    for entry in context.selected():
        try:
            if apply:
                change = context.workflow.set_level(entry.subject, entry.compatibility)
                if change is None:
                    click.echo(f"{entry.subject}: already {entry.compatibility}")
                else:
                    click.echo(f"{entry.subject}: {change[0]} -> {change[1]}")
                continue
            level = context.workflow.registry_level(entry.subject)
        except RegistryUnavailable as exc:
            raise click.ClickException(exc.reason) from exc
        status = "" if level == entry.compatibility else "   (differs: run compat --set)"
        click.echo(
            f"{entry.subject:<28} subjects.yaml {entry.compatibility:<20} registry {level}{status}"
        )
