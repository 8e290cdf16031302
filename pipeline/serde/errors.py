"""Every way a message or a record can be bad, as typed errors.

Each error carries what the dead-letter path needs to describe the failure:
``reason`` (one readable line), ``schema_id`` (the writer schema id from the
message, when there was one) and ``error_class`` (the class name, stable enough
to put in a header or a metric label).
"""

from __future__ import annotations

from collections.abc import Sequence


class PipelineCodecError(Exception):
    """Base class: a message or record the codec could not handle."""

    def __init__(self, reason: str, *, schema_id: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.schema_id = schema_id

    @property
    def error_class(self) -> str:
        return type(self).__name__


class NotConfluentFraming(PipelineCodecError):
    """The bytes do not start with magic byte 0x00 and a 4-byte schema id."""


class UnknownSchemaId(PipelineCodecError):
    """The writer schema id is not in the local cache (sync decode) or not in the registry."""


class RegistryUnavailable(PipelineCodecError):
    """The registry could not be reached (or refused us) and nothing usable is cached."""


class NotInRegistry(RegistryUnavailable):
    """The registry has no such subject, version or level (HTTP 404) where one was expected."""


class SchemaRejected(RegistryUnavailable):
    """The registry will not register the schema (incompatible, or not a valid schema)."""


class UndecodableRecord(PipelineCodecError):
    """The Avro bytes do not decode under the writer schema the message names."""


class IncompatibleWriterSchema(PipelineCodecError):
    """The writer schema cannot be resolved into the reader schema this code was built with."""


class UnknownTopic(PipelineCodecError):
    """The topic has no entry in ``schemas/subjects.yaml``."""


class RecordValidationError(PipelineCodecError):
    """A record does not match its schema; ``problems`` names each bad field and value."""

    def __init__(
        self, record_name: str, problems: Sequence[str], *, schema_id: int | None = None
    ) -> None:
        self.record_name = record_name
        self.problems = list(problems)
        super().__init__(
            f"{record_name} is invalid: " + "; ".join(self.problems), schema_id=schema_id
        )


class UndecodableKey(PipelineCodecError):
    """The message key is not UTF-8 text (keys on the wire are plain UTF-8 strings)."""


class SchemaNotCached(UnknownSchemaId):
    """Sync decode met a writer schema id it has not fetched yet; use ``decode_async``.

    A subclass of UnknownSchemaId so that callers treating "unknown id" as one case
    keep working, but it never means the registry lacks the id.
    """
