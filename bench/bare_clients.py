"""What the bare loops share: a consumer of the pre-loaded orders, the schema they were
written with, and a producer (librdkafka as set up for the pipeline, a produce call that
waits while librdkafka's queue is full, and the delivery errors kept to report)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, Producer

from pipeline.dev.loadgen import CONTRACT
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.streaming.producer import producer_config


def bare_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer from the start of its topics, committing on its own."""
    return Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": True,
        }
    )


def orders_schema(settings: Settings, input_topic: str) -> Any:
    """The parsed schema the orders of ``input_topic`` were written with (the catalog's
    OrderCreated, under the input's own topic prefix)."""
    input_settings = replace(
        settings, topic_prefix=input_topic.removesuffix(CONTRACT.order_created)
    )
    return Codecs.from_settings(input_settings)[input_topic].topic_schema.parsed


class BareProducer:
    def __init__(self, settings: Settings) -> None:
        self.producer = Producer(producer_config(settings))
        self.failures: list[Any] = []

    def _delivered(self, error: Any, message: Any) -> None:
        if error is not None:
            self.failures.append(error)

    def send(self, topic: str, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.05)

    def poll(self) -> None:
        self.producer.poll(0)

    def flush(self) -> None:
        self.producer.flush()

    def exit_on_failures(self) -> None:
        if self.failures:
            raise SystemExit(f"{len(self.failures)} produce failures, first: {self.failures[0]}")
