"""SchemaRegistry's one translation of registry failures, over a client that answers badly."""

from __future__ import annotations

from typing import Any, cast

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError

from pipeline.serde.errors import (
    NotInRegistry,
    RegistryUnavailable,
    SchemaRejected,
    UnknownSchemaId,
)
from pipeline.serde.registry import SchemaRegistry

URL = "http://registry.example/apis/ccompat/v7"
SCHEMA = '{"type": "record", "name": "R", "fields": []}'


class Failing:
    """Every request fails with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def request(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return request


def registry(error: Exception, *, has_login: bool = False) -> SchemaRegistry:
    return SchemaRegistry(cast(SchemaRegistryClient, Failing(error)), URL, has_login=has_login)


def http(status: int, message: str = "no") -> SchemaRegistryError:
    return SchemaRegistryError(status, status * 100, message)


def test_not_found_is_an_answer_where_it_is_one() -> None:
    missing = registry(http(404, "Subject not found"))
    assert missing.versions("s-value") == []
    assert missing.level("s-value") is None
    with pytest.raises(UnknownSchemaId) as unknown:
        missing.schema_text(7)
    assert unknown.value.schema_id == 7
    with pytest.raises(UnknownSchemaId, match="pipeline schemas register"):
        missing.schema_id("s-value", SCHEMA, register=False)
    with pytest.raises(NotInRegistry, match="version 3 of 's-value'"):
        missing.version("s-value", 3)


@pytest.mark.parametrize(
    ("status", "has_login", "says"),
    [
        (401, False, "wants a login: set PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH=user:password"),
        (401, True, "refused the login in PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"),
        (403, True, "refused this request to the login in PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"),
    ],
)
def test_a_refused_login_names_the_registry_the_status_and_the_setting(
    status: int, has_login: bool, says: str
) -> None:
    refused = registry(http(status, "Unauthorized"), has_login=has_login)
    for ask in (lambda: refused.versions("s-value"), lambda: refused.schema_text(7)):
        with pytest.raises(RegistryUnavailable) as caught:
            ask()
        message = str(caught.value)
        assert URL in message and says in message and f"HTTP {status}" in message


def test_a_schema_the_registry_will_not_take_is_rejected() -> None:
    with pytest.raises(SchemaRejected, match="incompatible"):
        registry(http(409, "Schema being registered is incompatible")).register("s-value", SCHEMA)


def test_no_answer_at_all_is_registry_unavailable() -> None:
    unreachable = registry(ConnectionRefusedError("refused"))
    with pytest.raises(RegistryUnavailable, match=r"unreachable.*global compatibility level"):
        unreachable.global_level()
    with pytest.raises(RegistryUnavailable) as caught:
        unreachable.schema_text(9)
    assert caught.value.schema_id == 9
