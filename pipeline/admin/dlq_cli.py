"""``pipeline dlq list|replay``: inspect dead letters and send them back after a fix.

``list`` reads every dead-letter topic from the start and changes nothing.
``replay`` sends each dead letter not replayed before (progress is the consumer
group ``<app_id>-dlq-replay``) to the source topic named in its headers, with its
original key, value and headers, and commits only after the broker acknowledged
all of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import click
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from pipeline.kafka.clients import logging_to_python
from pipeline.preflight import check
from pipeline.services import every_service
from pipeline.settings import Settings
from pipeline.streaming.dead_letters import (
    AGENT,
    APP_ID,
    ATTEMPTS,
    ERROR_CLASS,
    ERROR_MESSAGE,
    REPLAY_AGENT,
    REPLAY_FOR,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    without_dead_letter_headers,
)
from pipeline.streaming.producer import producer_config
from pipeline.topics import TopicNames

POLL_TIMEOUT = 10.0


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str:
        for header_name, value in reversed(self.headers):
            if header_name == name:
                return value.decode(errors="replace")
        return ""

    @property
    def source_topic(self) -> str:
        return self.header(SOURCE_TOPIC)


def _as_bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else (value or b"")


def _dead_letter(message: Message) -> DeadLetter:
    found = message.headers() or []
    raw_headers = list(found.items()) if isinstance(found, dict) else list(found)
    return DeadLetter(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=_as_bytes(message.key()) if message.key() is not None else None,
        value=_as_bytes(message.value()) if message.value() is not None else None,
        headers=[(name, _as_bytes(value)) for name, value in raw_headers],
    )


def read_dead_letters(
    consumer: Consumer, topic: str, *, from_committed: bool
) -> Iterator[DeadLetter]:
    """Every dead letter from the start (or the group's committed offset) up to the end of
    each partition as it was when this began.

    ``consumer`` reports the end of each partition (``enable.partition.eof``): the last
    offsets of a partition written in transactions (exactly_once) are commit markers, which
    are never delivered."""
    metadata = consumer.list_topics(topic, timeout=POLL_TIMEOUT).topics[topic]
    if metadata.error is not None:
        raise click.ClickException(f"{topic}: {metadata.error.str()}")
    partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
    committed = (
        {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=POLL_TIMEOUT)}
        if from_committed
        else {}
    )
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=POLL_TIMEOUT)
        start = max(low, committed.get(tp.partition, -1))
        if start >= high:
            continue
        consumer.assign([TopicPartition(topic, tp.partition, start)])
        position = start
        while position < high:
            message = consumer.poll(POLL_TIMEOUT)
            if message is None:
                raise click.ClickException(f"{topic}[{tp.partition}]: no message at {position}")
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                break
            if error is not None:
                raise click.ClickException(f"{topic}[{tp.partition}]: {error}")
            offset = message.offset() or 0
            if offset >= high:
                break  # written since this began (a replayed letter dead-lettered again)
            position = offset + 1
            yield _dead_letter(message)


def _topics(settings: Settings, sources: Sequence[str]) -> list[str]:
    """The dead-letter topics of ``sources``, by default of every service's sources."""
    if not sources:
        sources = [topic for service in every_service(settings) for topic in service.sources]
    return list(dict.fromkeys(TopicNames.dead_letters(source) for source in sources))


def _consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        logging_to_python(
            {
                **settings.kafka_client_config(),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": True,
            }
        )
    )


@click.group()
def dlq() -> None:
    """Dead letters: what the pipeline could not process."""


@dlq.command(name="list")
@click.argument("sources", nargs=-1)
def list_dead_letters(sources: tuple[str, ...]) -> None:
    """List dead letters of SOURCES (source topic names; default: every consumed topic)."""
    settings = check(Settings.from_env(), registry=False)
    consumer = _consumer(settings, f"{settings.app_id}-dlq-list")
    total = 0
    try:
        for topic in _topics(settings, sources):
            for letter in read_dead_letters(consumer, topic, from_committed=False):
                total += 1
                click.echo(
                    f"{topic}[{letter.partition}]@{letter.offset} key={letter.key!r} "
                    f"from {letter.source_topic}[{letter.header(SOURCE_PARTITION)}]"
                    f"@{letter.header(SOURCE_OFFSET)} attempts={letter.header(ATTEMPTS)} "
                    f"{letter.header(ERROR_CLASS)}: {letter.header(ERROR_MESSAGE)}"
                )
    finally:
        consumer.close()
    click.echo(f"{total} dead letter(s)")


@dlq.command()
@click.argument("sources", nargs=-1)
@click.option("--dry-run", is_flag=True, help="Show what would be replayed; send nothing.")
def replay(sources: tuple[str, ...], dry_run: bool) -> None:
    """Send dead letters of SOURCES back to their source topic (each one once)."""
    settings = check(Settings.from_env(), registry=False)
    consumer = _consumer(settings, f"{settings.app_id}-dlq-replay")
    producer = Producer(logging_to_python(producer_config(settings)))
    failures: list[str] = []

    def delivered(error: object, message: object) -> None:
        if error is not None:
            failures.append(str(error))

    replayed = 0
    try:
        for topic in _topics(settings, sources):
            progress: dict[int, int] = {}
            for letter in read_dead_letters(consumer, topic, from_committed=True):
                target = letter.source_topic or topic.removesuffix(".dlq")
                click.echo(f"{topic}[{letter.partition}]@{letter.offset} -> {target}")
                if not dry_run:
                    original: list[tuple[str, str | bytes | None]] = list(
                        without_dead_letter_headers(letter.headers)
                    )
                    # Only the service, and the agent of it, that could not process it
                    # takes it again.
                    if letter.header(APP_ID):
                        original.append((REPLAY_FOR, letter.header(APP_ID)))
                        if letter.header(AGENT):
                            original.append((REPLAY_AGENT, letter.header(AGENT)))
                    producer.produce(
                        target,
                        key=letter.key,
                        value=letter.value,
                        headers=original,
                        on_delivery=delivered,
                    )
                    producer.poll(0)
                progress[letter.partition] = letter.offset + 1
                replayed += 1
            if dry_run or not progress:
                continue
            producer.flush()
            if failures:
                raise click.ClickException(f"{len(failures)} replay(s) failed: {failures[0]}")
            consumer.commit(
                offsets=[TopicPartition(topic, p, offset) for p, offset in progress.items()],
                asynchronous=False,
            )
    finally:
        consumer.close()
    verb = "would replay" if dry_run else "replayed"
    click.echo(f"{verb} {replayed} dead letter(s)")
