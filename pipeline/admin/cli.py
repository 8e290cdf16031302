"""``pipeline topics create|list``: the deployment's topics and how many records each holds."""

from __future__ import annotations

import click
from confluent_kafka import Consumer

from pipeline.kafka.clients import logging_to_python
from pipeline.kafka.offsets import record_count
from pipeline.kafka.topics import ensure_topics
from pipeline.preflight import check
from pipeline.services import every_service
from pipeline.settings import Settings

TIMEOUT = 30.0


@click.group()
def topics() -> None:
    """The pipeline's topics (names follow PIPELINE_TOPIC_PREFIX and PIPELINE_APP_ID)."""


@topics.command()
def create() -> None:
    """Create the missing topics and check co-partitioning (workers also do this)."""
    settings = check(Settings.from_env(), registry=False)
    created = [
        name
        for service in every_service(settings)
        for name in ensure_topics(service.settings, service.specs())
    ]
    for name in created:
        click.echo(f"created {name}")
    click.echo(f"{len(created)} topic(s) created")


@topics.command(name="list")
def list_topics() -> None:
    """Each topic with its partition count and the records it holds now."""
    settings = check(Settings.from_env(), registry=False)
    config = {**settings.kafka_client_config(), "group.id": f"{settings.app_id}-topics"}
    consumer = Consumer(logging_to_python(config))
    try:
        existing = consumer.list_topics(timeout=TIMEOUT).topics
        specs = {spec.name: spec for service in every_service(settings) for spec in service.specs()}
        for spec in specs.values():
            metadata = existing.get(spec.name)
            if metadata is None:
                click.echo(f"{spec.name:<48} missing")
                continue
            records = record_count(consumer, spec.name, TIMEOUT)
            click.echo(f"{spec.name:<48} {len(metadata.partitions):>3} partitions {records:>10}")
    finally:
        consumer.close()
