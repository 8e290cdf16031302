"""The producer of the bare loops: librdkafka as set up for the pipeline, a produce call
that waits while librdkafka's queue is full, and the delivery errors kept to report."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from pipeline.settings import Settings
from pipeline.streaming.producer import producer_config


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
