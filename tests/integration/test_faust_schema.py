"""AvroValueSchema through a real topic: good records reach the agent, a bad one the hook."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import faust
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from faust.types import Message

from pipeline.engine.faust_schema import AvroValueSchema
from pipeline.serde.catalog import Catalog
from pipeline.serde.codec import Codecs
from pipeline.serde.errors import NotConfluentFraming, PipelineCodecError
from pipeline.serde.registry import InMemorySchemaSource
from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration

AT = datetime.datetime(2026, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)


def test_good_records_reach_the_agent_and_a_bad_one_goes_to_the_hook(
    stack: StackInfo, unique: str, tmp_path: Any
) -> None:
    prefix = f"faust-{unique}-"
    topic_name = f"{prefix}stock_levels"
    admin = AdminClient({"bootstrap.servers": stack.bootstrap})
    admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])[
        topic_name
    ].result(timeout=30)
    # The codec needs no registry here: an in-memory one with the schema pre-registered.
    codecs = Codecs(Catalog.load(topic_prefix=prefix), InMemorySchemaSource(), auto_register=True)
    codecs.prepare()
    good = [{"sku": f"sku-{n}", "available": n, "updated_at": AT} for n in range(2)]
    producer = Producer({"bootstrap.servers": stack.bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topic_name, key=b"sku-0", value=codecs.encode(topic_name, good[0]))
    producer.produce(topic_name, key=b"sku-x", value=b'{"sku": "not avro"}')
    producer.produce(topic_name, key=b"sku-1", value=codecs.encode(topic_name, good[1]))
    assert producer.flush(30) == 0

    received: list[tuple[str, dict[str, Any]]] = []
    failures: list[tuple[Message, PipelineCodecError]] = []
    done = asyncio.Event()

    async def on_decode_error(message: Message, error: PipelineCodecError) -> None:
        failures.append((message, error))

    app = faust.App(
        f"{prefix}app",
        broker=f"kafka://{stack.bootstrap}",
        store="memory://",
        datadir=str(tmp_path),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        topic_partitions=1,
        autodiscover=False,
    )
    topic = app.topic(
        topic_name, schema=AvroValueSchema(codecs[topic_name], on_decode_error=on_decode_error)
    )

    @app.agent(topic)
    async def collect(stream: Any) -> None:
        async for event in stream.events():
            received.append((event.key, event.value))
            if len(received) == len(good):
                done.set()

    async def run() -> None:
        await app.start()
        try:
            await asyncio.wait_for(done.wait(), timeout=60)
        finally:
            await app.stop()

    asyncio.run(run())
    assert received == [("sku-0", good[0]), ("sku-1", good[1])]
    assert len(failures) == 1
    message, error = failures[0]
    assert (message.key, message.offset) == (b"sku-x", 1)
    assert isinstance(error, NotConfluentFraming)
    assert message.acked  # the committed offset may move past it
