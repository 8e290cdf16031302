"""The stack's parts are real: a Kafka broker that stores Confluent-framed Avro, and a registry
that enforces BACKWARD compatibility."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.integration.conftest import StackInfo

PING_V1: dict[str, Any] = {
    "type": "record",
    "name": "Ping",
    "namespace": "stacktest",
    "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "long"}],
}


def test_a_topic_carries_confluent_framed_avro_end_to_end(stack: StackInfo, unique: str) -> None:
    topic = f"stack_ping_{unique}"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 3

    registry = SchemaRegistryClient({"url": stack.registry_url})
    # The topic-name strategy, explicitly: 2.16's default asks the registry for associations.
    serializer = AvroSerializer(
        registry, json.dumps(PING_V1), conf={"subject.name.strategy": topic_subject_name_strategy}
    )
    value = serializer({"id": "p-1", "n": 42}, SerializationContext(topic, MessageField.VALUE))
    assert value is not None
    assert value[0] == 0  # the magic byte
    schema_id = int.from_bytes(value[1:5], "big")
    assert registry.get_latest_version(f"{topic}-value").schema_id == schema_id

    producer = Producer({"bootstrap.servers": stack.bootstrap, "partitioner": "murmur2_random"})
    delivered: list[Any] = []
    producer.produce(topic, key=b"p-1", value=value, on_delivery=lambda e, m: delivered.append(e))
    producer.flush(30)
    assert delivered == [None]

    consumer = Consumer(
        {
            "bootstrap.servers": stack.bootstrap,
            "group.id": f"stack-test-{unique}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    deserializer = AvroDeserializer(
        registry, conf={"subject.name.strategy": topic_subject_name_strategy}
    )
    try:
        deadline = time.monotonic() + 60
        message = None
        while message is None and time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is not None and message.error():
                raise AssertionError(message.error())
        assert message is not None, "nothing consumed within 60 s"
        assert message.key() == b"p-1"
        assert message.value() == value
        decoded = deserializer(message.value(), SerializationContext(topic, MessageField.VALUE))
        assert decoded == {"id": "p-1", "n": 42}
    finally:
        consumer.close()


def test_the_registry_refuses_a_backward_incompatible_version_with_409(
    stack: StackInfo, unique: str
) -> None:
    subject = f"stack_compat_{unique}-value"
    url = f"{stack.registry_url}/subjects/{subject}/versions"
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    first = httpx.post(url, headers=headers, json={"schema": json.dumps(PING_V1)})
    assert first.status_code == 200, first.text

    # A new required field without a default: a v2 reader cannot read v1 data.
    v2 = {**PING_V1, "fields": [*PING_V1["fields"], {"name": "required", "type": "string"}]}
    refused = httpx.post(url, headers=headers, json={"schema": json.dumps(v2)})
    assert refused.status_code == 409, refused.text
    assert httpx.get(f"{stack.registry_url}/subjects/{subject}/versions").json() == [1]

    # The same field with a default is BACKWARD compatible and becomes version 2.
    v2_ok = {
        **PING_V1,
        "fields": [*PING_V1["fields"], {"name": "optional", "type": "string", "default": ""}],
    }
    accepted = httpx.post(url, headers=headers, json={"schema": json.dumps(v2_ok)})
    assert accepted.status_code == 200, accepted.text
    assert httpx.get(f"{stack.registry_url}/subjects/{subject}/versions").json() == [1, 2]
