"""The schema registry goes away mid-stream and comes back.

The worker reaches the registry through a TCP proxy that this module stops and starts: to the
worker that is a registry outage (connections cut, then refused) followed by the same
registry, with the same schemas, answering again, as a registry with persistent storage does
after a restart. (The local stack's registry keeps its schemas in memory, so restarting its
process would also renumber every schema id, which is not an outage a real one has.)

While it is away, messages under schema ids the worker has seen keep flowing, and POSTs keep
producing; a message under an id it has never seen is retried with backoff, then dead-lettered
with the reason (nothing is dropped). Once it is back, new ids are fetched again, and the
dead letter replayed with ``pipeline dlq replay`` is processed.
"""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from confluent_kafka import Producer
from fastavro import parse_schema, schemaless_writer

from pipeline.dev.audit import Record, read_topic
from pipeline.dev.loadgen import order
from pipeline.dev.stack.config import free_ports
from pipeline.dev.workers import Deployment, WorkerProcess, http_json, wait_for
from pipeline.serde.codec import Codecs, frame
from pipeline.serde.registry import SchemaRegistry
from pipeline.streaming.dead_letters import AGENT, ATTEMPTS, ERROR_CLASS, SCHEMA_ID
from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target``; ``stop`` cuts every connection and stops
    listening (connections are refused), ``start`` listens on the same port again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        (self.port,) = free_ports(1)
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._running.set()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        self._running.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            try:
                while self._running.is_set():
                    for key, _ in selector.select(timeout=0.5):
                        source: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = source.recv(65536)
                        if not data:
                            return
                        peers[source].sendall(data)
            except (OSError, ValueError):
                return
            finally:
                with self._lock:
                    for sock in peers:
                        self._sockets.discard(sock)
                        sock.close()


def reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/subjects", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@dataclass
class Outage:
    deployment: Deployment
    worker: WorkerProcess
    proxy: TcpProxy
    proxied_url: str
    codecs: Codecs
    producer: Producer
    # Ids the worker has never seen, registered before the outage; the schema text by id.
    unseen: dict[int, str]


def order_v2(name: str) -> str:
    """OrderCreated plus one optional field: readable by the worker, under an id of its own."""
    schema = json.loads((Path(__file__).parents[2] / "schemas" / "OrderCreated.avsc").read_text())
    schema["fields"].append({"name": name, "type": ["null", "string"], "default": None})
    return json.dumps(schema)


@pytest.fixture(scope="module")
def outage(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    registry = urlsplit(stack.registry_url)
    proxy = TcpProxy((registry.hostname or "127.0.0.1", registry.port or 80))
    proxy.start()
    proxied_url = urlunsplit(registry._replace(netloc=f"127.0.0.1:{proxy.port}"))
    name = f"it-registry-{uuid.uuid4().hex[:8]}"
    deployed = Deployment(
        name,
        tmp_path_factory.mktemp(name),
        stack.env,
        extra_env={"PIPELINE_SCHEMA_REGISTRY_URL": proxied_url},
    )
    worker = deployed.worker("w").start()
    try:
        worker.wait_healthy()
        direct = replace(deployed.settings, schema_registry_url=stack.registry_url)
        codecs = Codecs.from_settings(direct)
        codecs.prepare()
        source = SchemaRegistry.from_settings(direct)
        unseen: dict[int, str] = {}
        for field in ("coupon_code", "gift_note"):
            text = order_v2(field)
            unseen[source.schema_id(f"{name}.probe-{field}-value", text, register=True)] = text
        producer = Producer(
            {**deployed.settings.kafka_client_config(), "partitioner": "murmur2_random"}
        )
        yield Outage(deployed, worker, proxy, proxied_url, codecs, producer, unseen)
    finally:
        proxy.stop()
        worker.stop()


def send_orders(outage: Outage, user: str, count: int, start: int = 0) -> None:
    topic = outage.deployment.names.order_created
    lines = [{"sku": f"{user}-SKU", "quantity": 1, "unit_price_cents": 100}]
    for n in range(start, start + count):
        event = order(user, f"{user}-o{n:04d}", lines, 1_767_600_000_000 + n)
        outage.producer.produce(
            topic, key=user.encode(), value=outage.codecs.encode(topic, event.record)
        )
    assert outage.producer.flush(60) == 0


def send_under(outage: Outage, schema_id: int, user: str, order_id: str) -> bytes:
    """One order of 100 cents written with an unseen (v2) writer schema."""
    record: dict[str, Any] = {
        "order_id": order_id,
        "user_id": user,
        "items": [{"sku": f"{user}-SKU", "quantity": 1, "unit_price_cents": 100}],
        "total_cents": 100,
        "created_at": 1_767_700_000_000,
    }
    payload = io.BytesIO()
    schemaless_writer(payload, parse_schema(json.loads(outage.unseen[schema_id])), record)
    value = frame(schema_id, payload.getvalue())
    topic = outage.deployment.names.order_created
    outage.producer.produce(topic, key=user.encode(), value=value)
    assert outage.producer.flush(60) == 0
    return value


def order_count(worker: WorkerProcess, user: str) -> int:
    status, body = worker.get(f"/users/{user}/orders")
    return int(body["order_count"]) if status == 200 else 0


def test_cached_schemas_keep_flowing_unseen_ids_are_dead_lettered_then_replayed(
    outage: Outage,
) -> None:
    worker, names = outage.worker, outage.deployment.names
    first_unseen, second_unseen = sorted(outage.unseen)
    send_orders(outage, "before", 10)
    wait_for("orders before the outage", lambda: order_count(worker, "before") == 10)

    outage.proxy.stop()
    assert not reachable(outage.proxied_url)
    went_down = time.monotonic()
    send_orders(outage, "during", 20)
    poisoned = send_under(outage, first_unseen, "unseen", "unseen-o0001")
    send_orders(outage, "unseen", 1, start=2)
    posted = {**order("posted", "posted-o1", [], 1_767_800_000_000).record, "total_cents": 7}
    status, body = http_json("POST", worker.url + "/orders", posted)
    assert status == 202, body  # encoding needs no registry: the id was resolved at start-up

    wait_for("orders under cached ids", lambda: order_count(worker, "during") == 20)
    wait_for("the posted order", lambda: order_count(worker, "posted") == 1)
    dlq = names.dead_letters(names.order_created)

    # Both agents reading order_created (orders, notifications) dead-letter it.
    readers = [b"notifications", b"orders"]

    def the_dead_letters() -> list[Record] | None:
        found = read_topic(outage.deployment.settings, dlq)
        return found if len(found) >= len(readers) else None

    letters = wait_for("the unseen id's dead letters", the_dead_letters, timeout=120)
    print(f"\ndead-lettered {time.monotonic() - went_down:.1f} s into the outage")
    assert sorted(dict(letter.headers)[AGENT] for letter in letters) == readers
    for letter in letters:
        headers = dict(letter.headers)
        assert (letter.key, letter.value) == (b"unseen", poisoned)
        assert headers[ERROR_CLASS] == b"RegistryUnavailable"
        assert headers[ATTEMPTS] == b"4"  # retried with backoff first
        assert headers[SCHEMA_ID] == str(first_unseen).encode()
    assert worker.metric("pipeline_processing_retries_total", topic=names.order_created) >= 3
    # The order after it on the same key was not held up.
    wait_for("the order after the dead letter", lambda: order_count(worker, "unseen") == 1)
    assert worker.get("/health")[0] == 200

    outage.proxy.start()
    came_back = time.monotonic()
    # A new unseen id is fetched again, with no intervention.
    send_under(outage, second_unseen, "after", "after-o0001")
    wait_for("an order under a new id", lambda: order_count(worker, "after") == 1)
    fresh = time.monotonic() - came_back
    replayed = subprocess.run(
        [str(Path(sys.executable).with_name("pipeline")), "dlq", "replay", names.order_created],
        env=outage.deployment.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "replayed 2 dead letter(s)" in replayed.stdout
    wait_for("the replayed order", lambda: order_count(worker, "unseen") == 2)
    status, body = worker.get("/users/unseen/orders")
    assert body["total_spent_cents"] == 200
    print(
        f"registry back: a new id processed after {fresh:.1f} s, "
        f"the replayed dead letter after {time.monotonic() - came_back:.1f} s"
    )
    assert len(read_topic(outage.deployment.settings, dlq)) == 2  # nothing failed again
    assert worker.running()
