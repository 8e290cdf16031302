"""The ``pipeline`` command: one group per concern."""

from __future__ import annotations

import click

from pipeline.demo import demo
from pipeline.dlq_cli import dlq
from pipeline.evolution_cli import schemas
from pipeline.loadgen import loadgen
from pipeline.stack.cli import stack
from pipeline.topics_cli import topics


@click.group()
def main() -> None:
    """Shop event pipeline: local stack, schemas, dead letters, load generation, demo."""


main.add_command(stack)
main.add_command(schemas)
main.add_command(loadgen)
main.add_command(dlq)
main.add_command(demo)
main.add_command(topics)
