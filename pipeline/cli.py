"""The ``pipeline`` command: one group per concern."""

from __future__ import annotations

from typing import Any

import click

from pipeline.admin.cli import topics
from pipeline.admin.dlq_cli import dlq
from pipeline.dev.demo import demo
from pipeline.dev.loadgen import loadgen
from pipeline.dev.stack.cli import stack
from pipeline.evolution.cli import schemas
from pipeline.settings import SettingsError


class PipelineGroup(click.Group):
    """A bad setting (pipeline.settings, pipeline.preflight) ends any command with its
    message, which names the setting, and exit status 1: no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(str(error)) from None


@click.group(cls=PipelineGroup)
def main() -> None:
    """Shop event pipeline: local stack, schemas, dead letters, load generation, demo."""


main.add_command(stack)
main.add_command(schemas)
main.add_command(loadgen)
main.add_command(dlq)
main.add_command(demo)
main.add_command(topics)
