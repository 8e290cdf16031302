"""The dead-letter path: what the pipeline could not process goes to ``<topic>.dlq``.

A dead letter is the original message, unchanged: the same key bytes and value
bytes, the original headers, plus ``dlq.*`` headers saying why and which service
(``dlq.app.id``) could not process it. After a fix, ``pipeline dlq replay`` sends
the original key, value and headers back to the source topic named in
``dlq.source.topic``, marked ``dlq.replay.for`` that service: every other service
reading the topic processed the original already and skips the replay
(``is_replay_for_another``), so a replay never doubles an event elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.kafka.naming import TopicNaming
from pipeline.serde.codec import schema_id_of as framed_schema_id
from pipeline.serde.errors import NotConfluentFraming, PipelineCodecError
from pipeline.streaming.ports import Event, Message, MessageHeaders
from pipeline.streaming.producer import Delivered, ProducerRecord, RecordSender

log = logging.getLogger(__name__)

HEADER_PREFIX = "dlq."
ERROR_CLASS = "dlq.error.class"
ERROR_MESSAGE = "dlq.error.message"
SOURCE_TOPIC = "dlq.source.topic"
SOURCE_PARTITION = "dlq.source.partition"
SOURCE_OFFSET = "dlq.source.offset"
SCHEMA_ID = "dlq.schema.id"
ATTEMPTS = "dlq.attempts"
FAILED_AT = "dlq.failed.at"  # milliseconds since the epoch
APP_ID = "dlq.app.id"  # the service (Faust app id, consumer group) that dead-lettered it
AGENT = "dlq.agent"  # which of the service's agents could not process it
REPLAY_FOR = "dlq.replay.for"  # on a replayed message: the one service it is meant for
REPLAY_AGENT = "dlq.replay.agent"  # and the one agent of it

Headers = list[tuple[str, bytes]]


def schema_id_of(value: bytes | None, error: BaseException) -> int | None:
    """The writer schema id: from the codec error, else from the Confluent framing."""
    if isinstance(error, PipelineCodecError) and error.schema_id is not None:
        return error.schema_id
    if value is None:
        return None
    try:
        return framed_schema_id(value)
    except NotConfluentFraming:
        return None


def error_class_of(error: BaseException) -> str:
    if isinstance(error, PipelineCodecError):
        return error.error_class
    return type(error).__name__


def dead_letter_headers(
    *,
    original: Iterable[tuple[str, bytes]],
    source_topic: str,
    partition: int,
    offset: int,
    value: bytes | None,
    error: BaseException,
    attempts: int,
    failed_at_ms: int,
    app_id: str,
    agent: str,
) -> Headers:
    """The original headers (minus any earlier ``dlq.*`` ones) and why this message failed."""
    schema_id = schema_id_of(value, error)
    reason: Headers = [
        (ERROR_CLASS, error_class_of(error).encode()),
        (ERROR_MESSAGE, str(error)[:2000].encode()),
        (SOURCE_TOPIC, source_topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
        (SCHEMA_ID, b"" if schema_id is None else str(schema_id).encode()),
        (ATTEMPTS, str(attempts).encode()),
        (FAILED_AT, str(failed_at_ms).encode()),
        (APP_ID, app_id.encode()),
        (AGENT, agent.encode()),
    ]
    kept = [(name, value) for name, value in original if not name.startswith(HEADER_PREFIX)]
    return kept + reason


def without_dead_letter_headers(headers: Iterable[tuple[str, bytes]]) -> Headers:
    """Headers as the source message had them: what a replay sends back."""
    return [(name, value) for name, value in headers if not name.startswith(HEADER_PREFIX)]


def header_pairs(headers: MessageHeaders) -> Headers:
    """A message's headers as (name, value) pairs, in order."""
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def is_replay_for_another(message: Message, app_id: str, agent: str) -> bool:
    """A replayed dead letter of another service, or of another agent of this one: this
    one processed the original. (A dead letter from before agents were named is for
    every agent of its service.)"""
    if not message.headers:
        return False
    headers = dict(header_pairs(message.headers))
    meant_for = headers.get(REPLAY_FOR)
    if meant_for is None:
        return False
    if meant_for != app_id.encode():
        return True
    meant_for_agent = headers.get(REPLAY_AGENT)
    return meant_for_agent is not None and meant_for_agent != agent.encode()


def dead_letter_record(
    message: Message, error: BaseException, attempts: int, app_id: str, agent: str
) -> ProducerRecord:
    """The dead letter of ``message``, which ``agent`` of service ``app_id`` could not
    process: its own key, value and headers, and why it failed."""
    headers = dead_letter_headers(
        original=header_pairs(message.headers),
        source_topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        value=message.value,
        error=error,
        attempts=attempts,
        failed_at_ms=int(time.time() * 1000),
        app_id=app_id,
        agent=agent,
    )
    return ProducerRecord(
        TopicNaming.dead_letters(message.topic), message.key, message.value, headers=headers
    )


@dataclass
class DeadLetters:
    """Sends dead letters through the worker's producer and waits for the broker's ack,
    so a message is only acknowledged (and its offset committed) once its dead letter
    is stored."""

    producer: RecordSender
    app_id: str

    async def send(self, message: Message, error: BaseException, attempts: int, agent: str) -> None:
        record = self.record(message, error, attempts, agent)
        await self.producer.send_and_wait(record)
        self.report(message, error, attempts)

    def records(
        self, failed: Sequence[tuple[Event, BaseException]], agent: str
    ) -> list[ProducerRecord]:
        """The dead letters of a batch's ``failed`` events, each failed at its first attempt."""
        return [self.record(event.message, error, 1, agent) for event, error in failed]

    async def send_all(
        self, failed: Sequence[tuple[Event, BaseException]], agent: str
    ) -> asyncio.Future[Delivered]:
        """Hand the ``records`` of ``failed`` to the producer at once; the future resolves
        once all are stored."""
        return await self.producer.send(self.records(failed, agent))

    def report_all(self, failed: Sequence[tuple[Event, BaseException]]) -> None:
        for event, error in failed:
            self.report(event.message, error, 1)

    def record(
        self, message: Message, error: BaseException, attempts: int, agent: str
    ) -> ProducerRecord:
        """The dead letter of ``message``: sent here, or in a transaction
        (pipeline.streaming.transactions)."""
        return dead_letter_record(message, error, attempts, self.app_id, agent)

    def report(self, message: Message, error: BaseException, attempts: int) -> None:
        log.warning(
            "dead-lettered %s[%d]@%d to %s after %d attempt(s): %s: %s",
            message.topic,
            message.partition,
            message.offset,
            TopicNaming.dead_letters(message.topic),
            attempts,
            error_class_of(error),
            error,
        )
