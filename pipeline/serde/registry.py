"""The schema registry, behind one layer: every request and every failure of it here.

``SchemaRegistry`` wraps confluent-kafka's ``SchemaRegistryClient`` (any
Confluent-compatible registry; auth, TLS and the timeout come from the settings)
and answers what the codec asks (``SchemaSource``: the writer schema text for an
id, the id of one of our schemas) and what the evolution workflow asks (versions,
compatibility levels and tests, registration). ``InMemorySchemaSource`` answers
the codec's questions from a dict, for unit tests and benchmarks that must not
need a registry.

Failures are translated in one place, ``SchemaRegistry._ask``, into the errors of
``pipeline.serde.errors``: HTTP 404 is NotInRegistry (which a method turns into
its answer where it is one: no versions, no level of its own, UnknownSchemaId for
an id); a refused login is RegistryUnavailable naming the setting to fix; a
schema the registry will not take (HTTP 409, 422) is SchemaRejected; any other
refusal, or no answer at all, is RegistryUnavailable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from pipeline.serde.errors import (
    IncompatibleWriterSchema,
    NotInRegistry,
    RegistryUnavailable,
    SchemaRejected,
    UnknownSchemaId,
)
from pipeline.settings import Settings

HTTP_NOT_FOUND = 404
HTTP_UNAUTHORIZED = 401
HTTP_FORBIDDEN = 403
# The registry's answers to a schema it will not register: incompatible, invalid.
SCHEMA_REFUSED = (409, 422)
LOGIN_SETTING = "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"

T = TypeVar("T")


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


class SchemaRegistry:
    """The registry, through confluent-kafka's client (which caches schemas by id itself)."""

    def __init__(
        self, client: SchemaRegistryClient, registry_url: str = "", *, has_login: bool = False
    ) -> None:
        self.client = client
        self.registry_url = registry_url  # for error messages only
        # Whether a login was configured (never the login itself): what a 401 means.
        self.has_login = has_login

    @classmethod
    def from_settings(cls, settings: Settings) -> SchemaRegistry:
        return cls(
            SchemaRegistryClient(settings.registry_client_config()),
            settings.schema_registry_url,
            has_login=bool(settings.schema_registry_basic_auth),
        )

    def close(self) -> None:
        self.client.close()

    def _ask(self, what: str, call: Callable[[], T], *, schema_id: int | None = None) -> T:
        """``call()``, its failures translated (``what`` names the question in messages)."""
        where = f"the registry at {self.registry_url}" if self.registry_url else "the registry"
        try:
            return call()
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if status == HTTP_NOT_FOUND:
                raise NotInRegistry(f"{where} has no {what}", schema_id=schema_id) from exc
            if status == HTTP_FORBIDDEN:
                problem = f"refused this request to the login in {LOGIN_SETTING}"
            elif status == HTTP_UNAUTHORIZED and self.has_login:
                problem = f"refused the login in {LOGIN_SETTING}"
            elif status == HTTP_UNAUTHORIZED:
                problem = f"wants a login: set {LOGIN_SETTING}=user:password"
            elif status in SCHEMA_REFUSED:
                raise SchemaRejected(
                    f"{where} refused {what}: {exc.error_message}", schema_id=schema_id
                ) from exc
            else:
                raise RegistryUnavailable(
                    f"{where} refused {what}: {exc}", schema_id=schema_id
                ) from exc
            raise RegistryUnavailable(
                f"{where} {problem} (HTTP {status}: {exc.error_message}), asked for {what}",
                schema_id=schema_id,
            ) from exc
        except Exception as exc:  # httpx transport errors, timeouts, bad JSON
            raise RegistryUnavailable(
                f"{where} is unreachable, asked for {what}: {exc!r}", schema_id=schema_id
            ) from exc

    # What the codec asks (SchemaSource).

    def schema_text(self, schema_id: int) -> str:
        what = f"schema id {schema_id}"
        try:
            schema = self._ask(what, lambda: self.client.get_schema(schema_id), schema_id=schema_id)
        except NotInRegistry as exc:
            raise UnknownSchemaId(
                f"schema id {schema_id} is not in the registry", schema_id=schema_id
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
        if register:
            return self.register(subject, schema_str)
        schema = Schema(schema_str, schema_type="AVRO")
        try:
            registered = self._ask(
                f"subject {subject!r}", lambda: self.client.lookup_schema(subject, schema)
            )
        except NotInRegistry as exc:
            raise UnknownSchemaId(
                f"the local schema is not registered under subject {subject!r} "
                "(run `pipeline schemas register`, or set PIPELINE_AUTO_REGISTER_SCHEMAS=true)"
            ) from exc
        if registered.schema_id is None:
            raise RegistryUnavailable(f"registry returned no id for subject {subject!r}")
        return int(registered.schema_id)

    # What the evolution workflow asks.

    def versions(self, subject: str) -> list[int]:
        """The version numbers under ``subject``, oldest first ([] for an unknown subject)."""
        try:
            numbers = self._ask(
                f"the versions of {subject!r}", lambda: self.client.get_versions(subject)
            )
        except NotInRegistry:
            return []
        return sorted(numbers)

    def version(self, subject: str, number: int) -> tuple[int, str]:
        """The schema id and text of version ``number`` of ``subject``."""
        what = f"version {number} of {subject!r}"
        registered = self._ask(what, lambda: self.client.get_version(subject, number))
        text = registered.schema.schema_str if registered.schema else None
        if text is None or registered.schema_id is None:
            raise RegistryUnavailable(f"{what} came back without a schema")
        return int(registered.schema_id), text

    def level(self, subject: str) -> str | None:
        """The compatibility level of ``subject``; None if it has no level of its own
        (Confluent answers 404 then; Apicurio answers with the global level)."""
        what = f"the compatibility level of {subject!r}"
        try:
            return str(self._ask(what, lambda: self.client.get_compatibility(subject))).upper()
        except NotInRegistry:
            return None

    def global_level(self) -> str:
        level = self._ask("the global compatibility level", self.client.get_compatibility)
        return str(level).upper()

    def set_level(self, subject: str, level: str) -> None:
        self._ask(
            f"compatibility {level} for {subject!r}",
            lambda: self.client.set_compatibility(subject_name=subject, level=level),
        )

    def is_compatible(self, subject: str, schema_str: str) -> bool:
        """The registry's verdict on ``schema_str`` as the next version of ``subject``."""
        schema = Schema(schema_str, schema_type="AVRO")
        return bool(
            self._ask(
                f"a compatibility test under {subject!r}",
                lambda: self.client.test_compatibility(subject, schema, verbose=True),
            )
        )

    def register(self, subject: str, schema_str: str) -> int:
        """Register ``schema_str`` under ``subject`` (idempotent); its schema id.

        Raises SchemaRejected if the registry will not take it (incompatible, invalid).
        """
        schema = Schema(schema_str, schema_type="AVRO")
        return int(
            self._ask(
                f"a new version of {subject!r}",
                lambda: self.client.register_schema(subject, schema),
            )
        )


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
