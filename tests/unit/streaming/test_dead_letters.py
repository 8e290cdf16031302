from __future__ import annotations

import asyncio
from typing import cast

from faust.types import Message

from pipeline.serde.errors import UnknownSchemaId
from pipeline.streaming.dead_letters import (
    REPLAY_AGENT,
    REPLAY_FOR,
    DeadLetters,
    dead_letter_headers,
    is_replay_for_another,
    schema_id_of,
    without_dead_letter_headers,
)
from pipeline.streaming.producer import BatchProducer, Placement, ProducerRecord


def test_headers_say_why_and_keep_the_originals() -> None:
    headers = dead_letter_headers(
        original=[("trace", b"t1"), ("dlq.attempts", b"9")],
        source_topic="order_created",
        partition=2,
        offset=17,
        value=b"\x00\x00\x00\x00\x07rest",
        error=UnknownSchemaId("schema id 7 is not in the registry", schema_id=7),
        attempts=1,
        failed_at_ms=123,
        app_id="shop-pipeline",
        agent="orders",
    )
    as_dict = dict(headers)
    assert as_dict["dlq.error.class"] == b"UnknownSchemaId"
    assert as_dict["dlq.error.message"] == b"schema id 7 is not in the registry"
    assert as_dict["dlq.source.topic"] == b"order_created"
    assert (as_dict["dlq.source.partition"], as_dict["dlq.source.offset"]) == (b"2", b"17")
    assert (as_dict["dlq.schema.id"], as_dict["dlq.attempts"]) == (b"7", b"1")
    assert (as_dict["dlq.app.id"], as_dict["dlq.agent"]) == (b"shop-pipeline", b"orders")
    # An earlier dead letter's reasons are replaced, not accumulated.
    assert [name for name, _ in headers].count("dlq.attempts") == 1
    assert without_dead_letter_headers(headers) == [("trace", b"t1")]


def test_schema_id_from_framing_when_the_error_has_none() -> None:
    assert schema_id_of(b"\x00\x00\x00\x01\x00payload", ValueError("x")) == 256
    assert schema_id_of(b"plain text", ValueError("x")) is None
    assert schema_id_of(None, ValueError("x")) is None


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[ProducerRecord] = []

    async def send_and_wait(self, record: ProducerRecord) -> Placement:
        self.sent.append(record)
        return Placement(record.topic, 0, 41)


def test_a_dead_letter_is_the_original_message_sent_to_the_dead_letter_topic() -> None:
    producer = RecordingProducer()
    message = Message(
        "order_created", 2, 17, 0.0, 0, [("trace", b"t1")], None, b"\x01garbage", None
    )
    asyncio.run(
        DeadLetters(cast(BatchProducer, producer), "shop-pipeline").send(
            message, ValueError("bad"), attempts=1, agent="orders"
        )
    )
    (letter,) = producer.sent
    assert (letter.topic, letter.key, letter.value) == ("order_created.dlq", None, b"\x01garbage")
    assert letter.partition is None  # by the key, as the source was
    headers = dict(letter.headers or [])
    assert headers["trace"] == b"t1"
    assert headers["dlq.error.class"] == b"ValueError"


def test_a_replay_is_taken_only_by_the_service_and_agent_that_dead_lettered_it() -> None:
    def message(headers: list[tuple[str, bytes]] | None) -> Message:
        return Message("order_created", 0, 5, 0.0, 0, headers, b"u1", b"v", None)

    replay = message([("trace", b"t1"), (REPLAY_FOR, b"shop-pipeline")])
    assert not is_replay_for_another(replay, "shop-pipeline", "orders")
    assert is_replay_for_another(replay, "shop-pipeline-points", "points")
    assert not is_replay_for_another(message(None), "shop-pipeline-points", "points")
    plain = message([("trace", b"t1")])
    assert not is_replay_for_another(plain, "shop-pipeline-points", "points")
    # Two agents of one service read order_created: the one that failed it takes it again.
    for_orders = message([(REPLAY_FOR, b"shop-pipeline"), (REPLAY_AGENT, b"orders")])
    assert not is_replay_for_another(for_orders, "shop-pipeline", "orders")
    assert is_replay_for_another(for_orders, "shop-pipeline", "notifications")
    assert is_replay_for_another(for_orders, "shop-pipeline-points", "orders")
