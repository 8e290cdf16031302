"""The two questions the codec asks a schema registry, behind a small interface.

``SchemaSource`` is all the codec needs: the writer schema text for an id, and the
id of one of our schemas under a subject. ``ConfluentSchemaSource`` answers them with
confluent-kafka's ``SchemaRegistryClient`` (any Confluent-compatible registry,
auth and TLS through its config); ``InMemorySchemaSource`` answers them from a dict,
for unit tests and benchmarks that must not need a registry.

Both translate failures into the typed errors of ``pipeline.serde.errors``.
"""

from __future__ import annotations

from typing import Protocol

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from pipeline.serde.errors import IncompatibleWriterSchema, RegistryUnavailable, UnknownSchemaId
from pipeline.settings import Settings

HTTP_NOT_FOUND = 404
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
# The registry's answers to a missing or refused login.
LOGIN_REFUSED = (HTTP_UNAUTHORIZED, HTTP_FORBIDDEN)


class SchemaSource(Protocol):
    def schema_text(self, schema_id: int) -> str:
        """The Avro schema registered under ``schema_id``.

        Raises UnknownSchemaId if the registry has no such id, RegistryUnavailable if
        it cannot be asked.
        """
        ...

    def schema_id(self, subject: str, schema_str: str, *, register: bool) -> int:
        """The id of ``schema_str`` under ``subject``: registered first if ``register``.

        Raises UnknownSchemaId if it is not registered (and ``register`` is false),
        RegistryUnavailable if the registry cannot be asked or refuses.
        """
        ...


class ConfluentSchemaSource:
    """A ``SchemaSource`` over confluent-kafka's client (which caches answers itself)."""

    def __init__(self, client: SchemaRegistryClient, registry_url: str = "") -> None:
        self.client = client
        self.registry_url = registry_url  # for error messages only

    @classmethod
    def from_settings(cls, settings: Settings) -> ConfluentSchemaSource:
        return cls(
            SchemaRegistryClient(settings.registry_client_config()), settings.schema_registry_url
        )

    def _refused(self, what: str, exc: SchemaRegistryError) -> str:
        """Why the registry refused ``what``; a refused login names the setting to fix."""
        where = f"registry at {self.registry_url}" if self.registry_url else "registry"
        if exc.http_status_code in LOGIN_REFUSED:
            return (
                f"{where} refused {what}: HTTP {exc.http_status_code} {exc.error_message} "
                "(check the login in PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH)"
            )
        return f"{where} refused {what}: {exc}"

    def schema_text(self, schema_id: int) -> str:
        try:
            schema = self.client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            if exc.http_status_code == HTTP_NOT_FOUND:
                raise UnknownSchemaId(
                    f"schema id {schema_id} is not in the registry", schema_id=schema_id
                ) from exc
            raise RegistryUnavailable(
                self._refused(f"schema id {schema_id}", exc), schema_id=schema_id
            ) from exc
        except Exception as exc:  # httpx transport errors, timeouts, bad JSON
            raise RegistryUnavailable(
                f"registry unreachable while fetching schema id {schema_id}: {exc!r}",
                schema_id=schema_id,
            ) from exc
        # Confluent omits schemaType for Avro; Apicurio may too.
        if schema.schema_type not in (None, "AVRO"):
            raise IncompatibleWriterSchema(
                f"schema id {schema_id} is {schema.schema_type}, not Avro", schema_id=schema_id
            )
        if schema.references:
            raise IncompatibleWriterSchema(
                f"schema id {schema_id} uses schema references, which this codec does not resolve",
                schema_id=schema_id,
            )
        if schema.schema_str is None:
            raise UnknownSchemaId(
                f"registry returned no schema text for id {schema_id}", schema_id=schema_id
            )
        return schema.schema_str

    def schema_id(self, subject: str, schema_str: str, *, register: bool) -> int:
        schema = Schema(schema_str, schema_type="AVRO")
        try:
            if register:
                return int(self.client.register_schema(subject, schema))
            registered = self.client.lookup_schema(subject, schema)
        except SchemaRegistryError as exc:
            if exc.http_status_code == HTTP_NOT_FOUND:
                raise UnknownSchemaId(
                    f"the local schema is not registered under subject {subject!r} "
                    "(run `pipeline schemas register`, or set PIPELINE_AUTO_REGISTER_SCHEMAS=true)"
                ) from exc
            raise RegistryUnavailable(self._refused(f"subject {subject!r}", exc)) from exc
        except Exception as exc:
            raise RegistryUnavailable(
                f"registry unreachable while resolving subject {subject!r}: {exc!r}"
            ) from exc
        if registered.schema_id is None:
            raise RegistryUnavailable(f"registry returned no id for subject {subject!r}")
        return int(registered.schema_id)


class InMemorySchemaSource:
    """A registry in a dict: ids from 1, one list of schema texts per subject."""

    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def add(self, subject: str, schema_str: str) -> int:
        """Register ``schema_str`` under ``subject`` (idempotent) and return its id."""
        known = {text: known_id for known_id, text in self.texts.items()}
        schema_id = known.get(schema_str, len(self.texts) + 1)
        self.texts[schema_id] = schema_str
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def schema_text(self, schema_id: int) -> str:
        try:
            return self.texts[schema_id]
        except KeyError:
            raise UnknownSchemaId(
                f"schema id {schema_id} is not in the registry", schema_id=schema_id
            ) from None

    def schema_id(self, subject: str, schema_str: str, *, register: bool) -> int:
        if register:
            return self.add(subject, schema_str)
        for schema_id in self.subjects.get(subject, []):
            if self.texts[schema_id] == schema_str:
                return schema_id
        raise UnknownSchemaId(f"the local schema is not registered under subject {subject!r}")
