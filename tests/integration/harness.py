"""Real workers as separate processes, and readers of what they produced.

Each deployment has its own app id and topic prefix, so tests never see each
other's topics, consumer groups or table state.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from confluent_kafka import Consumer, TopicPartition

from pipeline.codec import Codecs
from pipeline.settings import Settings
from pipeline.topics import TopicNames
from tests.integration.conftest import StackInfo

FAUST = str(Path(sys.executable).with_name("faust"))
START_TIMEOUT = 180.0
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 180.0, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something other than None (or False)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def http(method: str, url: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body); the body must be JSON whatever the status."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@dataclass
class Deployment:
    """One app id and topic prefix on the shared stack."""

    stack: StackInfo
    name: str
    root: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.stack.env,
            "PIPELINE_APP_ID": self.name,
            "PIPELINE_TOPIC_PREFIX": f"{self.name}.",
            "PIPELINE_AUTO_REGISTER_SCHEMAS": "true",
            **self.extra_env,
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def names(self) -> TopicNames:
        return TopicNames.from_settings(self.settings)

    def worker(self, label: str) -> Worker:
        return Worker(self, label, self.root / label, free_port())


@dataclass
class Worker:
    deployment: Deployment
    label: str
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.deployment.root / f"{self.label}.log"

    def start(self) -> Worker:
        env = {
            **self.deployment.env,
            "PIPELINE_DATA_DIR": str(self.data_dir),
            "PIPELINE_WEB_PORT": str(self.port),
        }
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [FAUST, "-A", "pipeline.app", "worker", "-l", "info"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"worker {self.label} exited; see {self.log}")
        try:
            status, body = http("GET", f"{self.url}/health")
        except (OSError, ValueError):
            return False
        return status == 200 and body.get("status") == "ok"

    def wait_healthy(self, timeout: float = START_TIMEOUT) -> Worker:
        wait_for(f"worker {self.label} to be healthy", self.healthy, timeout)
        return self

    def get(self, path: str) -> tuple[int, Any]:
        return http("GET", self.url + path)

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample on GET /metrics (0 when absent)."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            text = response.read().decode()
        selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        wanted = f"{name}{{{selector}}}" if labels else name
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            if sample == wanted:
                return float(value)
        return 0.0

    def stop(self, timeout: float = 60.0) -> None:
        """A graceful shutdown (SIGTERM): Faust commits and closes its stores."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(60)


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def read_topic(settings: Settings, topic: str) -> list[Record]:
    """Every record of ``topic`` from the start up to its current end, by partition."""
    consumer = Consumer(
        {
            **settings.kafka_client_config(),
            "group.id": f"test-reader-{os.getpid()}",
            "enable.auto.commit": False,
        }
    )
    records: list[Record] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        for partition in sorted(partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            offset = low
            while offset < high:
                message = consumer.poll(30)
                assert message is not None, f"{topic}[{partition}]: nothing at {offset}"
                assert message.error() is None, message.error()
                offset = (message.offset() or 0) + 1
                found = message.headers() or []
                pairs = list(found.items()) if isinstance(found, dict) else list(found)
                headers = [
                    (name, value.encode() if isinstance(value, str) else (value or b""))
                    for name, value in pairs
                ]
                key, value = message.key(), message.value()
                records.append(
                    Record(
                        partition,
                        offset - 1,
                        key.encode() if isinstance(key, str) else key,
                        value.encode() if isinstance(value, str) else value,
                        headers,
                    )
                )
    finally:
        consumer.close()
    return records


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-watermarks"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=30)[
                1
            ]
            for partition in partitions
        }
    finally:
        consumer.close()


def decoded(codecs: Codecs, topic: str, records: Iterable[Record]) -> list[dict[str, Any]]:
    """Records in partition order, decoded synchronously (our own schema ids are cached)."""
    codec = codecs[topic]
    return [codec.decode(record.value or b"") for record in records]
