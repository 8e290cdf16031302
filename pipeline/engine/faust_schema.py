"""An optional adapter: a ``faust.Schema`` whose values are our Avro codec and whose
keys are UTF-8 text, for Faust users who write agents of their own.

The pipeline's agents do not use it: their topics are raw bytes, each agent
decodes with ``Codecs.decode`` inside ``pipeline.streaming.processing``'s runner,
which retries and dead-letters what fails. Nothing in the pipeline imports this
module.

Use it on a topic, and agents receive decoded dicts::

    codecs = Codecs.from_settings(settings)       # prepare() it at start-up for sends
    orders_topic = app.topic(
        "order_created", schema=AvroValueSchema(codecs["order_created"], on_decode_error=hook)
    )

    @app.agent(orders_topic)
    async def orders(stream):
        async for order in stream:                # a dict; the key is event.key, a str
            ...
            await stats_topic.send(key=user_id, value=codecs.encode("user_order_stats", row))

Sending: the schema's serializers are ``raw``, so ``topic.send(value=bytes)`` passes
the bytes from ``TopicCodec.encode`` through unchanged and a ``str`` key goes out
as UTF-8.

Decode errors never reach the agent and never stop the worker: the message goes
to ``on_decode_error(message, error)`` (an async hook; ``error`` is a
``pipeline.serde.errors.PipelineCodecError`` with ``reason``, ``schema_id`` and
``error_class``), is acknowledged (so the committed offset moves past it) and is
skipped. The default hook, ``DecodeErrorLog``, logs and counts; plug the
dead-letter path in instead. Writer schemas unseen so far are fetched from the
registry in a thread, off the event loop, the first time only.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import faust
from faust.types import AppT, Message

from pipeline.serde.codec import TopicCodec
from pipeline.serde.errors import (
    PipelineCodecError,
    SchemaNotCached,
    UndecodableKey,
)

log = logging.getLogger(__name__)

DecodeErrorHook = Callable[[Message, PipelineCodecError], Awaitable[None]]


class DecodeErrorLog:
    """The default hook: log each bad message and keep counts and the most recent ones."""

    def __init__(self, keep: int = 100) -> None:
        self.counts: Counter[str] = Counter()
        self.recent: deque[tuple[Message, PipelineCodecError]] = deque(maxlen=keep)

    async def __call__(self, message: Message, error: PipelineCodecError) -> None:
        self.counts[error.error_class] += 1
        self.recent.append((message, error))
        log.warning(
            "skipping undecodable message %s[%d]@%d: %s: %s",
            message.topic,
            message.partition,
            message.offset,
            error.error_class,
            error.reason,
        )


class AvroValueSchema(faust.Schema[str, dict[str, Any]]):
    """Keys as UTF-8 ``str``, values through ``TopicCodec`` (Confluent wire format).

    For agents of your own; the pipeline's agents decode through ``Codecs`` instead.
    """

    def __init__(
        self, codec: TopicCodec, *, on_decode_error: DecodeErrorHook | None = None
    ) -> None:
        super().__init__(key_serializer="raw", value_serializer="raw")
        self.codec = codec
        self.on_decode_error: DecodeErrorHook = on_decode_error or DecodeErrorLog()

    def compile(
        self,
        app: AppT,
        *,
        on_key_decode_error: Any = None,
        on_value_decode_error: Any = None,
        default_propagate: bool = False,
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        """The decoder Faust calls per message; Faust's own error callbacks are not used.

        Faust's callbacks would throw the error into the agent's stream (killing the
        agent); ours hand it to ``on_decode_error`` and skip the message, whatever
        ``propagate`` says.
        """
        create_event = app.create_event
        decode_key, decode_value, handle_error = self._key, self._value, self._handle_error

        async def decode(message: Message, *, propagate: bool = default_propagate) -> Any:
            try:
                key = decode_key(message)
                value = await decode_value(message)
            except PipelineCodecError as error:
                await handle_error(app, message, error)
                return None  # Faust's stream skips None: the agent never sees it
            return create_event(key, value, message.headers, message)

        return decode

    @staticmethod
    def _key(message: Message) -> str | None:
        if message.key is None:
            return None
        try:
            return bytes(message.key).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UndecodableKey(f"key is not UTF-8 text: {exc}") from exc

    async def _value(self, message: Message) -> dict[str, Any]:
        try:
            return self.codec.decode(message.value)  # no I/O once the writer schema is cached
        except SchemaNotCached:
            return await self.codec.decode_async(message.value)

    async def _handle_error(self, app: AppT, message: Message, error: PipelineCodecError) -> None:
        # Faust hands the message to the decoder once per subscribing channel: report once.
        if message.acked:
            return
        try:
            await self.on_decode_error(message, error)
        except Exception:  # a failing hook must not take the worker down
            log.exception(
                "on_decode_error hook failed for %s[%d]@%d",
                message.topic,
                message.partition,
                message.offset,
            )
        # Acknowledge every reference Faust took, so the committed offset can move past
        # the message.
        message.ack(app.consumer, n=max(message.refcount, 1))
