"""Avro values in Confluent wire format, checked against the schema registry.

Wire format: byte 0x00, the writer schema id (4 bytes, big-endian), Avro binary.

The core is pure: registry answers come through a ``SchemaSource`` and are cached,
so after start-up ``encode`` and ``decode`` do no I/O.

How to use it (agents, web views, producers)::

    codecs = Codecs.from_settings(settings)      # one per process
    codecs.prepare()                              # or: await codecs.prepare_async()
    data = codecs.encode("order_created", {"order_id": "o1", ...})  # bytes for topic.send
    record = await codecs.decode("order_created", data)  # dict; unseen ids fetched off the loop

    orders = codecs["order_created"]              # the TopicCodec, for the sync API
    orders.decode(data)                           # raises SchemaNotCached on an unseen id

Topic names include ``settings.topic_prefix`` (``Codecs.from_settings`` applies it).

Records are plain dicts in fastavro's native form: ``timestamp-millis`` fields
decode to timezone-aware UTC ``datetime`` and encode from an aware ``datetime``
or an int of epoch milliseconds (a naive datetime is refused); ``long`` money
fields are ints of cents. Fields with defaults may be left out when encoding.

Encoding resolves the topic's schema id once, in ``prepare``: registered first
if ``auto_register_schemas`` is on, else looked up (the normal case: ``pipeline
schemas register`` ran before the deploy). Decoding fetches each writer schema
id once and resolves it into the reader schema this code was built with, so a
v1 reader reads v2 data and the other way round, as the subject's compatibility
level promises.

Every failure is a typed error from ``pipeline.serde.errors`` carrying ``reason``,
``schema_id`` and ``error_class`` for the dead-letter path.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, to_parsing_canonical_form

from pipeline.serde.catalog import SUBJECTS_FILE, Catalog, TopicSchema
from pipeline.serde.errors import (
    IncompatibleWriterSchema,
    NotConfluentFraming,
    RecordValidationError,
    SchemaNotCached,
    UndecodableRecord,
    UnknownSchemaId,
    UnknownTopic,
)
from pipeline.serde.registry import SchemaRegistry, SchemaSource
from pipeline.serde.validation import encode_guard, record_problems
from pipeline.settings import Settings

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
HEADER_SIZE = HEADER.size  # 5

Reader = Callable[[bytes], dict[str, Any]]


class CodecNotPrepared(RuntimeError):
    """``encode`` ran before the topic's schema id was resolved: call ``prepare()`` at start-up."""


def header(schema_id: int) -> bytes:
    """The 5 bytes that start every message written under ``schema_id``."""
    return HEADER.pack(MAGIC_BYTE, schema_id)


def frame(schema_id: int, payload: bytes) -> bytes:
    """Confluent framing around Avro binary ``payload``."""
    return header(schema_id) + payload


def schema_id_of(data: bytes) -> int:
    """The writer schema id of a framed message; NotConfluentFraming if it is not framed."""
    if len(data) < HEADER_SIZE:
        raise NotConfluentFraming(
            f"{len(data)} bytes is too short for Confluent framing (magic byte + 4-byte id)"
        )
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise NotConfluentFraming(
            f"first byte is 0x{data[0]:02x}, not the Confluent magic byte 0x00"
        )
    return int(schema_id)


@dataclass(frozen=True)
class WriterSchema:
    schema_id: int
    parsed: Any
    canonical: str  # Avro parsing canonical form: equal forms read identically


class WriterSchemas:
    """Writer schemas by id, fetched from the registry once and shared by every topic codec.

    An id the registry does not have is asked again for ``recheck_s`` (a schema registered
    a moment ago may not be visible yet everywhere), then believed unknown for
    ``memory_s``: further messages under it fail at once, without a request.
    """

    def __init__(
        self,
        source: SchemaSource,
        *,
        recheck_s: float = 0.0,
        memory_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.recheck_s = recheck_s
        self.memory_s = memory_s
        self.clock = clock
        self._by_id: dict[int, WriterSchema] = {}
        # Ids believed unknown: until when, and the error their messages fail with.
        self._unknown: dict[int, tuple[float, UnknownSchemaId]] = {}
        # Fetches under way (or finished and not yet seen by whoever asks next).
        self._lookups: dict[int, asyncio.Future[WriterSchema]] = {}

    def cached(self, schema_id: int) -> WriterSchema | None:
        return self._by_id.get(schema_id)

    def believed_unknown(self, schema_id: int) -> UnknownSchemaId | None:
        """Why ``schema_id`` is believed not to be in the registry, if it is."""
        entry = self._unknown.get(schema_id)
        if entry is None:
            return None
        until, error = entry
        if self.clock() >= until:
            del self._unknown[schema_id]
            return None
        return UnknownSchemaId(error.reason, schema_id=schema_id)

    def remember(self, schema_id: int, schema_str: str) -> WriterSchema:
        try:
            schema = json.loads(schema_str)
            writer = WriterSchema(
                schema_id=schema_id,
                parsed=parse_schema(schema),
                canonical=to_parsing_canonical_form(schema),
            )
        except (json.JSONDecodeError, SchemaParseException, ValueError, TypeError) as exc:
            raise IncompatibleWriterSchema(
                f"schema id {schema_id} is not a usable Avro schema: {exc}", schema_id=schema_id
            ) from exc
        self._by_id[schema_id] = writer
        return writer

    def fetch(self, schema_id: int) -> WriterSchema:
        """The writer schema, from the cache or (blocking I/O) from the registry, asked once."""
        writer = self._by_id.get(schema_id)
        if writer is None:
            writer = self.remember(schema_id, self.source.schema_text(schema_id))
        return writer

    def prefetch(self, schema_id: int) -> None:
        """Start the lookup of ``schema_id`` unless it is cached, believed unknown or under
        way: the later ids of a partition held behind one being fetched are asked about at
        the same time, not one after the other."""
        known = schema_id in self._by_id or schema_id in self._lookups
        if not known and self.believed_unknown(schema_id) is None:
            self.lookup(schema_id)

    def lookup(self, schema_id: int) -> asyncio.Future[WriterSchema]:
        """The fetch of ``schema_id`` off the event loop, re-checked as the class says:
        started if none is under way. A finished one is handed out once: when it failed,
        its error is raised here, and the next call asks the registry anew."""
        lookup = self._lookups.get(schema_id)
        if lookup is None:
            lookup = self._lookups[schema_id] = asyncio.ensure_future(self._rechecked(schema_id))
            lookup.add_done_callback(_retrieve)
        elif lookup.done():
            del self._lookups[schema_id]
            lookup.result()  # raises what stopped it
        return lookup

    async def fetch_async(self, schema_id: int) -> WriterSchema:
        """The writer schema, from the cache or through ``lookup`` (waited for)."""
        writer = self._by_id.get(schema_id)
        if writer is not None:
            return writer
        lookup = self.lookup(schema_id)
        try:
            return await asyncio.shield(lookup)
        finally:
            if lookup.done() and self._lookups.get(schema_id) is lookup:
                del self._lookups[schema_id]  # seen: the next ask starts anew

    async def _rechecked(self, schema_id: int) -> WriterSchema:
        deadline = self.clock() + self.recheck_s
        pause = RECHECK_FIRST_PAUSE_S
        while True:
            try:
                writer = await asyncio.to_thread(self.fetch, schema_id)
            except UnknownSchemaId as missing:
                left = deadline - self.clock()
                if left > 0:
                    await asyncio.sleep(min(pause, left))
                    pause *= 2
                    continue
                error = UnknownSchemaId(
                    f"{missing.reason} (asked again for {self.recheck_s:g} s)",
                    schema_id=schema_id,
                )
                if self.memory_s > 0:
                    self._believe_unknown(schema_id, error)
                raise error from None
            # Cached now: whoever asks next finds it there.
            self._lookups.pop(schema_id, None)
            return writer

    def _believe_unknown(self, schema_id: int, error: UnknownSchemaId) -> None:
        """Remember ``error`` for ``memory_s``, in place of the lookup that found it: every
        later message under the id fails with it. The ids remembered longest, whose time is
        up, are forgotten first (each has the same memory time): a stream of ever new
        unknown ids holds no more than ``memory_s`` of them."""
        now = self.clock()
        while self._unknown:
            oldest, (until, _) = next(iter(self._unknown.items()))
            if until > now:
                break
            del self._unknown[oldest]
        self._unknown.pop(schema_id, None)
        self._unknown[schema_id] = (now + self.memory_s, error)
        self._lookups.pop(schema_id, None)


RECHECK_FIRST_PAUSE_S = 0.1


def _retrieve(lookup: asyncio.Future[WriterSchema]) -> None:
    """A lookup nobody waits for any more must not be logged as a lost error."""
    if not lookup.cancelled():
        lookup.exception()


class TopicCodec:
    """Encode and decode the values of one topic.

    ``encode`` and ``decode`` are synchronous and do no I/O; ``decode`` raises
    SchemaNotCached for a writer id it has not seen, ``decode_async`` fetches it.
    """

    def __init__(
        self, topic_schema: TopicSchema, writers: WriterSchemas, *, auto_register: bool
    ) -> None:
        self.topic_schema = topic_schema
        self.writers = writers
        self.auto_register = auto_register
        self.schema_id: int | None = None
        self._header = b""
        self._canonical = to_parsing_canonical_form(dict(topic_schema.schema))
        self._guard = encode_guard(topic_schema.schema)
        self._readers: dict[int, Reader] = {}

    @property
    def topic(self) -> str:
        return self.topic_schema.topic

    def prepare(self) -> int:
        """Resolve (and with auto-register, register) the schema id used by ``encode``.

        Blocking I/O: call it at start-up, or use ``prepare_async`` inside a loop.
        """
        if self.schema_id is None:
            entry = self.topic_schema
            schema_id = self.writers.source.schema_id(
                entry.subject, entry.schema_str, register=self.auto_register
            )
            # Our own schema is also a writer schema: our messages never need a fetch.
            self.writers.remember(schema_id, entry.schema_str)
            self._header = header(schema_id)
            self.schema_id = schema_id
        return self.schema_id

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The record as Confluent-framed Avro under this topic's schema.

        Raises RecordValidationError naming every bad field and value; nothing is
        returned for a bad record, so no half-written message can be sent.
        """
        if self.schema_id is None:
            raise CodecNotPrepared(
                f"schema id for topic {self.topic!r} is not resolved: call prepare() at start-up"
            )
        # fastavro's writer refuses most bad values itself; the guard adds what it lets
        # through (bools, floats and out-of-range numbers in int/long fields, naive
        # datetimes, which it would take as local time).
        if self._guard is not None and not self._guard(record):
            raise self._invalid(record, None)
        out = io.BytesIO()
        out.write(self._header)
        try:
            schemaless_writer(out, self.topic_schema.parsed, record)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise self._invalid(record, exc) from exc
        return out.getvalue()

    def validate(self, record: Any) -> None:
        """Raise RecordValidationError listing every problem of ``record``; no I/O, no id needed."""
        problems = record_problems(self.topic_schema.schema, record)
        if problems:
            raise RecordValidationError(
                self.topic_schema.record_name, problems, schema_id=self.schema_id
            )

    def _invalid(self, record: Any, writer_error: Exception | None) -> RecordValidationError:
        problems = record_problems(self.topic_schema.schema, record)
        if not problems:  # the writer saw something our checker does not model
            problems = [f"fastavro refused it: {writer_error}"]
        return RecordValidationError(
            self.topic_schema.record_name, problems, schema_id=self.schema_id
        )

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """The record in ``data``, resolved into this code's reader schema.

        Raises NotConfluentFraming (also for no value at all: a tombstone),
        SchemaNotCached (writer id not fetched yet: use ``decode_async``),
        UndecodableRecord or IncompatibleWriterSchema.
        """
        if data is None:
            raise NotConfluentFraming(f"message on {self.topic!r} has no value (a tombstone)")
        schema_id = schema_id_of(data)
        reader = self._readers.get(schema_id)
        if reader is None:
            writer = self.writers.cached(schema_id)
            if writer is None:
                believed = self.writers.believed_unknown(schema_id)
                if believed is not None:
                    raise believed
                raise SchemaNotCached(
                    f"writer schema id {schema_id} is not cached yet", schema_id=schema_id
                )
            reader = self._readers[schema_id] = self._reader_for(writer)
        return reader(data)

    async def decode_async(self, data: bytes | None) -> dict[str, Any]:
        """``decode``, fetching an unseen writer schema in a thread instead of raising.

        Raises UnknownSchemaId (not in the registry), RegistryUnavailable, and the
        errors of ``decode``.
        """
        try:
            return self.decode(data)
        except SchemaNotCached as missing:
            assert missing.schema_id is not None
            await self.writers.fetch_async(missing.schema_id)
            return self.decode(data)

    def _reader_for(self, writer: WriterSchema) -> Reader:
        schema_id = writer.schema_id
        writer_schema = writer.parsed
        # Same canonical form: read without resolution, the fast path.
        reader_schema = None if writer.canonical == self._canonical else self.topic_schema.parsed
        record_name = self.topic_schema.record_name

        def read(data: bytes) -> dict[str, Any]:
            stream = io.BytesIO(data)
            stream.seek(HEADER_SIZE)
            try:
                record = schemaless_reader(stream, writer_schema, reader_schema)
            except SchemaResolutionError as exc:
                raise IncompatibleWriterSchema(
                    f"writer schema id {schema_id} cannot be read as {record_name}: {exc}",
                    schema_id=schema_id,
                ) from exc
            except Exception as exc:  # fastavro raises many types on corrupt input
                raise UndecodableRecord(
                    f"bytes do not decode under writer schema id {schema_id}: "
                    f"{type(exc).__name__}: {exc}",
                    schema_id=schema_id,
                ) from exc
            if stream.tell() != len(data):
                raise UndecodableRecord(
                    f"{len(data) - stream.tell()} bytes left over after the record "
                    f"(writer schema id {schema_id})",
                    schema_id=schema_id,
                )
            if not isinstance(record, dict):
                raise UndecodableRecord(
                    f"writer schema id {schema_id} is not a record schema", schema_id=schema_id
                )
            return record

        return read


class Codecs:
    """A TopicCodec for every topic of the catalog, sharing one writer schema cache."""

    def __init__(
        self,
        catalog: Catalog,
        source: SchemaSource,
        *,
        auto_register: bool,
        unknown_recheck_s: float = 0.0,
        unknown_memory_s: float = 0.0,
    ) -> None:
        self.catalog = catalog
        self.writers = WriterSchemas(source, recheck_s=unknown_recheck_s, memory_s=unknown_memory_s)
        self._by_topic = {
            entry.topic: TopicCodec(entry, self.writers, auto_register=auto_register)
            for entry in catalog
        }

    @classmethod
    def from_settings(cls, settings: Settings, catalog: Catalog | None = None) -> Codecs:
        """Codecs over the registry of ``settings`` (URL, basic auth) and its auto-register flag."""
        return cls(
            catalog
            if catalog is not None
            else Catalog.load(settings.schema_dir, topic_prefix=settings.topic_prefix),
            SchemaRegistry.from_settings(settings),
            auto_register=settings.auto_register_schemas,
            unknown_recheck_s=settings.unknown_schema_recheck_ms / 1000,
            unknown_memory_s=settings.unknown_schema_memory_s,
        )

    def __getitem__(self, topic: str) -> TopicCodec:
        codec = self._by_topic.get(topic)
        if codec is None:
            raise UnknownTopic(
                f"topic {topic!r} has no schema in {self.catalog.schema_dir / SUBJECTS_FILE}"
            )
        return codec

    def __iter__(self) -> Iterator[TopicCodec]:
        return iter(self._by_topic.values())

    def encode(self, topic: str, record: Mapping[str, Any]) -> bytes:
        """``self[topic].encode(record)``: the value bytes to send to ``topic``."""
        return self[topic].encode(record)

    async def decode(self, topic: str, data: bytes | None) -> dict[str, Any]:
        """``self[topic].decode_async(data)``."""
        return await self[topic].decode_async(data)

    def decode_known(self, topic: str, data: bytes | None) -> dict[str, Any]:
        """``self[topic].decode(data)``: SchemaNotCached for a writer id not fetched yet
        (``lookup`` fetches it)."""
        return self[topic].decode(data)

    def lookup(self, schema_id: int) -> asyncio.Future[WriterSchema]:
        """``WriterSchemas.lookup``: the fetch of a writer schema, re-checked."""
        return self.writers.lookup(schema_id)

    def prefetch(self, data: bytes | None) -> None:
        """``WriterSchemas.prefetch`` of the writer schema ``data`` is framed with; nothing
        for data that is not framed (its decode says why)."""
        if data is not None and len(data) >= HEADER_SIZE and data[0] == MAGIC_BYTE:
            self.writers.prefetch(HEADER.unpack_from(data)[1])

    def prepare(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """Resolve the encode schema id of ``topics`` (default: every topic), blocking.
        Topic → schema id."""
        codecs = self if topics is None else [self[topic] for topic in topics]
        return {codec.topic: codec.prepare() for codec in codecs}

    async def prepare_async(self, topics: Iterable[str] | None = None) -> dict[str, int]:
        """``prepare`` in a thread: for a Faust ``@app.task`` or ``on_start``."""
        return await asyncio.to_thread(self.prepare, topics)
