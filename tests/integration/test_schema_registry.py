"""The codec and the schema workflow against the real registry (Apicurio, ccompat API).

Every test works under a unique topic prefix, so its subjects are its own in the
shared registry.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka.schema_registry import (
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    topic_subject_name_strategy,
)
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from pipeline.cli import main
from pipeline.serde.catalog import Catalog, default_schema_dir
from pipeline.serde.codec import Codecs
from pipeline.serde.errors import UnknownSchemaId
from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration

CREATED_AT = datetime.datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=datetime.UTC)
ORDER: dict[str, Any] = {
    "order_id": "o-1",
    "user_id": "u-1",
    "items": [{"sku": "sku-1", "quantity": 3, "unit_price_cents": 1250}],
    "total_cents": 3750,
    "created_at": CREATED_AT,
}


def schemas_copy(directory: Path, extra_order_field: dict[str, Any] | None = None) -> Path:
    shutil.copytree(default_schema_dir(), directory, dirs_exist_ok=True)
    if extra_order_field is not None:
        path = directory / "OrderCreated.avsc"
        schema = json.loads(path.read_text())
        schema["fields"].append(extra_order_field)
        path.write_text(json.dumps(schema, indent=2))
    return directory


def run_schemas(stack: StackInfo, prefix: str, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["schemas", "--topic-prefix", prefix, *args], env=stack.env, catch_exceptions=False
    )


@pytest.fixture
def prefix(unique: str) -> str:
    return f"it-{unique}-"


@pytest.fixture
def client(stack: StackInfo) -> SchemaRegistryClient:
    return SchemaRegistryClient(stack.settings().registry_client_config())


@pytest.fixture
def registered(stack: StackInfo, prefix: str) -> Codecs:
    """Every subject registered under the prefix; codecs that only look ids up."""
    result = run_schemas(stack, prefix, "register")
    assert result.exit_code == 0, result.output
    codecs = Codecs.from_settings(stack.settings(topic_prefix=prefix, auto_register_schemas=False))
    codecs.prepare()
    return codecs


def test_register_then_register_again_changes_nothing(
    stack: StackInfo, prefix: str, client: SchemaRegistryClient
) -> None:
    first = run_schemas(stack, prefix, "register")
    assert first.exit_code == 0, first.output
    subjects = len(Catalog.load())
    assert first.output.count("registered version 1") == subjects
    subject = f"{prefix}order_created-value"
    assert client.get_compatibility(subject) == "BACKWARD_TRANSITIVE"

    second = run_schemas(stack, prefix, "register")
    assert second.exit_code == 0, second.output
    assert second.output.count("unchanged (version 1") == subjects
    assert "nothing to do" in second.output
    assert client.get_versions(subject) == [1]


def test_check_fails_on_a_required_field_without_default_and_register_refuses_it(
    stack: StackInfo, registered: Codecs, prefix: str, tmp_path: Path, client: SchemaRegistryClient
) -> None:
    broken = schemas_copy(tmp_path, {"name": "currency", "type": "string", "doc": "ISO code."})
    check = run_schemas(stack, prefix, "--schemas-dir", str(broken), "check")
    assert check.exit_code == 1, check.output
    assert (
        f"ERR {prefix}order_created-value: incompatible, under BACKWARD_TRANSITIVE" in check.output
    )
    assert "field currency is missing from the writer's schema and has no default" in check.output
    assert f"ok  {prefix}stock_levels-value: unchanged (version 1)" in check.output

    register = run_schemas(stack, prefix, "--schemas-dir", str(broken), "register")
    assert register.exit_code == 1
    assert client.get_versions(f"{prefix}order_created-value") == [1]


def test_an_optional_field_passes_check_registers_as_v2_and_diff_shows_it(
    stack: StackInfo, registered: Codecs, prefix: str, tmp_path: Path, client: SchemaRegistryClient
) -> None:
    coupon = {"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Code."}
    v2_dir = schemas_copy(tmp_path, coupon)
    diff = run_schemas(
        stack, prefix, "--schemas-dir", str(v2_dir), "--topic", "order_created", "diff"
    )
    assert "added            coupon: [null, string], default null" in diff.output
    check = run_schemas(stack, prefix, "--schemas-dir", str(v2_dir), "check")
    assert check.exit_code == 0, check.output
    register = run_schemas(stack, prefix, "--schemas-dir", str(v2_dir), "register")
    assert f"{prefix}order_created-value: registered version 2" in register.output
    assert client.get_versions(f"{prefix}order_created-value") == [1, 2]


def test_the_registry_itself_refuses_an_incompatible_version_with_409(
    registered: Codecs, prefix: str, client: SchemaRegistryClient
) -> None:
    schema = json.loads(registered[f"{prefix}order_created"].topic_schema.schema_str)
    schema["fields"].append({"name": "currency", "type": "string"})
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema(f"{prefix}order_created-value", Schema(json.dumps(schema), "AVRO"))
    assert refused.value.http_status_code == 409


def test_compat_reads_and_sets_levels_from_the_mapping(
    stack: StackInfo, registered: Codecs, prefix: str, client: SchemaRegistryClient
) -> None:
    subject = f"{prefix}stock_levels-value"
    client.set_compatibility(subject_name=subject, level="NONE")
    shown = run_schemas(stack, prefix, "--topic", "stock_levels", "compat")
    assert "registry NONE" in shown.output and "differs" in shown.output
    fixed = run_schemas(stack, prefix, "--topic", "stock_levels", "compat", "--set")
    assert f"{subject}: NONE -> BACKWARD_TRANSITIVE" in fixed.output
    assert client.get_compatibility(subject) == "BACKWARD_TRANSITIVE"


def test_a_record_encoded_in_another_process_decodes_here(
    stack: StackInfo, registered: Codecs, prefix: str
) -> None:
    script = f"""
import datetime, sys
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
codecs = Codecs.from_settings(Settings.from_env())
codecs.prepare()
at = datetime.datetime(2026, 3, 4, tzinfo=datetime.UTC)
record = {{"sku": "sku-9", "available": -4, "updated_at": at}}
sys.stdout.write(codecs.encode("{prefix}stock_levels", record).hex())
"""
    env = {**stack.env, "PIPELINE_TOPIC_PREFIX": prefix, "PIPELINE_AUTO_REGISTER_SCHEMAS": "false"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    # A fresh codec set: the writer id must come from the registry, not a shared cache.
    fresh = Codecs.from_settings(stack.settings(topic_prefix=prefix))
    decoded = asyncio.run(fresh.decode(f"{prefix}stock_levels", bytes.fromhex(out.stdout)))
    assert decoded == {
        "sku": "sku-9",
        "available": -4,
        "updated_at": datetime.datetime(2026, 3, 4, tzinfo=datetime.UTC),
    }


def test_confluent_kafka_serializers_and_our_codec_read_each_other(
    registered: Codecs, prefix: str, client: SchemaRegistryClient
) -> None:
    topic = f"{prefix}order_created"
    schema_str = registered[topic].topic_schema.schema_str
    context = SerializationContext(topic, MessageField.VALUE)
    serializer = AvroSerializer(
        client,
        schema_str,
        conf={
            "auto.register.schemas": False,
            "use.latest.version": True,
            # 2.16 defaults to a strategy that asks for "associations" first.
            "subject.name.strategy": topic_subject_name_strategy,
        },
    )
    deserializer = AvroDeserializer(
        client, schema_str, conf={"subject.name.strategy": topic_subject_name_strategy}
    )
    theirs = serializer(ORDER, context)
    assert theirs is not None
    assert asyncio.run(registered.decode(topic, theirs)) == ORDER
    ours = registered.encode(topic, ORDER)
    assert ours == theirs  # same id, same Avro bytes
    assert deserializer(ours, context) == ORDER


def test_a_v1_reader_decodes_v2_data_fetching_the_writer_schema_by_id(
    stack: StackInfo, registered: Codecs, prefix: str, tmp_path: Path
) -> None:
    coupon = {"name": "coupon", "type": ["null", "string"], "default": None, "doc": "Code."}
    v2_dir = schemas_copy(tmp_path, coupon)
    v2 = Codecs.from_settings(
        stack.settings(topic_prefix=prefix, auto_register_schemas=True),
        Catalog.load(v2_dir, topic_prefix=prefix),
    )
    topic = f"{prefix}order_created"
    v2.prepare()
    v2_data = v2.encode(topic, ORDER | {"coupon": "SPRING"})
    assert v2[topic].schema_id != registered[topic].schema_id
    assert asyncio.run(registered.decode(topic, v2_data)) == ORDER
    v1_data = registered.encode(topic, ORDER)
    assert asyncio.run(v2.decode(topic, v1_data)) == ORDER | {"coupon": None}


def test_lookup_of_an_unregistered_schema_names_the_subject_and_the_fix(
    stack: StackInfo, prefix: str
) -> None:
    codecs = Codecs.from_settings(stack.settings(topic_prefix=prefix, auto_register_schemas=False))
    with pytest.raises(UnknownSchemaId, match="pipeline schemas register"):
        codecs.prepare()


def test_an_id_missing_from_the_registry_is_unknown_schema_id(
    registered: Codecs, prefix: str
) -> None:
    with pytest.raises(UnknownSchemaId) as caught:
        asyncio.run(registered.decode(f"{prefix}order_created", b"\x00\x7f\xff\xff\xf0\x02"))
    assert caught.value.schema_id == 0x7FFFFFF0
