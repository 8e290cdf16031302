"""Against a broker that requires a SASL login (`pipeline stack up --sasl`): the pipeline's
clients log in with what the settings say, a wrong password is refused, and the password never
shows in a worker's log or HTTP answers."""

from __future__ import annotations

import os
import stat
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from pipeline.loadgen import ORDER_CREATED, LoadConfig, generate, send
from pipeline.settings import Settings, read_env_file
from pipeline.stack.launcher import Stack
from pipeline.workers import Deployment, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sasl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own whose broker wants a login."""
    stack = Stack(tmp_path_factory.mktemp("sasl-stack"))
    stack.up(sasl=True)
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def sasl_env(sasl_stack: Stack) -> dict[str, str]:
    """The PIPELINE_* settings that `stack up --sasl` wrote, login included."""
    return read_env_file(sasl_stack.env_file)


def metadata_errors(env: dict[str, str]) -> tuple[int, list[KafkaError]]:
    """(brokers listed, client errors seen) for one metadata request with these settings."""
    errors: list[KafkaError] = []
    config: dict[str, Any] = {
        **Settings.from_env(env).kafka_client_config(),
        "log_level": 0,
        "error_cb": errors.append,
    }
    admin = AdminClient(config)
    try:
        brokers = len(admin.list_topics(timeout=10).brokers)
    except KafkaException:
        brokers = 0
    admin.poll(0.5)
    return brokers, errors


def test_the_env_file_names_a_sasl_login_and_only_its_owner_can_read_it(
    sasl_stack: Stack, sasl_env: dict[str, str]
) -> None:
    assert stat.S_IMODE(sasl_stack.env_file.stat().st_mode) == 0o600
    assert sasl_env["PIPELINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert sasl_env["PIPELINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert sasl_env["PIPELINE_KAFKA_SASL_USERNAME"] == "pipeline"
    assert len(sasl_env["PIPELINE_KAFKA_SASL_PASSWORD"]) >= 24


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_the_right_login_is_accepted(sasl_env: dict[str, str], mechanism: str) -> None:
    brokers, errors = metadata_errors({**sasl_env, "PIPELINE_KAFKA_SASL_MECHANISM": mechanism})
    assert brokers == 1
    assert errors == []


def test_a_wrong_password_is_refused_by_the_broker(sasl_env: dict[str, str]) -> None:
    brokers, errors = metadata_errors({**sasl_env, "PIPELINE_KAFKA_SASL_PASSWORD": "wrong"})
    assert brokers == 0
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors


def test_a_worker_processes_orders_over_sasl_without_showing_the_password(
    sasl_env: dict[str, str], tmp_path: Path
) -> None:
    password = sasl_env["PIPELINE_KAFKA_SASL_PASSWORD"]
    shop = Deployment(f"it-sasl-{uuid.uuid4().hex[:8]}", tmp_path, {**os.environ, **sasl_env})
    events = list(generate(LoadConfig(users=5, orders=40, skus=4, seed=3)))
    orders = Counter(event.key for event in events if event.stream == ORDER_CREATED)
    worker = shop.worker("w").start()
    try:
        worker.wait_healthy()
        report = send(events, shop.settings, progress=False)
        assert report.failed == 0

        def all_counted() -> bool:
            return all(
                worker.get(f"/users/{user}/orders")[1].get("order_count") == count
                for user, count in orders.items()
            )

        wait_for("every order to be counted", all_counted)
        answers = str([worker.get(path) for path in ("/health", "/users/user-00000/orders")])
        with urllib.request.urlopen(worker.url + "/metrics", timeout=30) as response:
            answers += response.read().decode()
    finally:
        worker.stop()
    assert password not in answers
    assert password not in worker.log.read_text()
