"""Against a stack whose broker requires a SASL login and whose registry requires HTTP basic
auth (`pipeline stack up --sasl --registry-auth`, one stack for the module): the pipeline's
clients log in with what the settings say, a missing or wrong login is refused (and our commands
say so), and neither secret ever shows in a worker's log or HTTP answers."""

from __future__ import annotations

import base64
import os
import stat
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient, SchemaRegistryError

from pipeline.dev.loadgen import CONTRACT, LoadConfig, generate, send
from pipeline.dev.stack.launcher import Stack
from pipeline.dev.workers import Deployment, wait_for
from pipeline.serde.codec import Codecs
from pipeline.serde.errors import RegistryUnavailable
from pipeline.settings import Settings, read_env_file
from tests.integration.harness import run_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of this module's own whose broker and registry want a login."""
    stack = Stack(tmp_path_factory.mktemp("secured-stack"))
    # Keycloak creates its database at each start: a minute or more on 2 busy cores.
    stack.up(sasl=True, registry_auth=True, timeout=300)
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture
def secured_env(secured_stack: Stack) -> dict[str, str]:
    """The PIPELINE_* settings that `stack up --sasl --registry-auth` wrote, logins included."""
    return read_env_file(secured_stack.env_file)


def registry_status(registry_url: str, basic_auth: str | None) -> int:
    """The HTTP status of GET /subjects, with that basic login or none."""
    request = urllib.request.Request(registry_url + "/subjects")
    if basic_auth is not None:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(basic_auth.encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


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


def test_the_env_file_names_both_logins_and_only_its_owner_can_read_it(
    secured_stack: Stack, secured_env: dict[str, str]
) -> None:
    assert stat.S_IMODE(secured_stack.env_file.stat().st_mode) == 0o600
    # Keycloak's folder holds the registry secret too (the realm it imports, its database).
    assert stat.S_IMODE((secured_stack.state_dir / "keycloak").stat().st_mode) == 0o700
    assert secured_env["PIPELINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
    assert secured_env["PIPELINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert secured_env["PIPELINE_KAFKA_SASL_USERNAME"] == "pipeline"
    assert len(secured_env["PIPELINE_KAFKA_SASL_PASSWORD"]) >= 24
    client_id, _, secret = secured_env["PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"].partition(":")
    assert client_id == "pipeline"
    assert len(secret) >= 24


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_the_right_login_is_accepted(secured_env: dict[str, str], mechanism: str) -> None:
    brokers, errors = metadata_errors({**secured_env, "PIPELINE_KAFKA_SASL_MECHANISM": mechanism})
    assert brokers == 1
    assert errors == []


def test_a_wrong_password_is_refused_by_the_broker(secured_env: dict[str, str]) -> None:
    brokers, errors = metadata_errors({**secured_env, "PIPELINE_KAFKA_SASL_PASSWORD": "wrong"})
    assert brokers == 0
    assert any(error.code() == KafkaError._AUTHENTICATION for error in errors), errors


def test_the_registry_answers_401_without_a_login_or_with_a_wrong_one(
    secured_env: dict[str, str],
) -> None:
    url, login = (
        secured_env["PIPELINE_SCHEMA_REGISTRY_URL"],
        secured_env["PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"],
    )
    assert registry_status(url, login) == 200
    assert registry_status(url, None) == 401
    assert registry_status(url, "pipeline:wrong-secret") == 401
    assert registry_status(url, "no-such-client:" + login.partition(":")[2]) == 401
    # What the pipeline's own client sees.
    for auth in ({}, {"basic.auth.user.info": "pipeline:wrong-secret"}):
        client = SchemaRegistryClient({"url": url, **auth})
        with pytest.raises(SchemaRegistryError) as refused:
            client.get_subjects()
        assert refused.value.http_status_code == 401


def test_the_codec_without_a_login_names_the_registry_and_the_401(
    secured_env: dict[str, str], unique: str
) -> None:
    settings = Settings.from_env(
        {**secured_env, "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH": "", "PIPELINE_TOPIC_PREFIX": unique}
    )
    with pytest.raises(RegistryUnavailable) as refused:
        Codecs.from_settings(settings).prepare()
    message = str(refused.value)
    assert secured_env["PIPELINE_SCHEMA_REGISTRY_URL"] in message
    assert "HTTP 401" in message
    assert "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH" in message


@pytest.mark.parametrize("login", ["", "pipeline:wrong-secret"])
def test_schemas_commands_without_the_right_login_exit_1_saying_why(
    secured_env: dict[str, str], unique: str, login: str
) -> None:
    env = {
        **secured_env,
        "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH": login,
        "PIPELINE_TOPIC_PREFIX": unique,
    }
    for command in ("check", "register"):
        result = run_pipeline(env, "schemas", command, timeout=120)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr + result.stdout
        assert secured_env["PIPELINE_SCHEMA_REGISTRY_URL"] in result.stderr
        assert "HTTP 401" in result.stderr
        expected = "refused the login" if login else "wants a login"
        assert expected in result.stderr
        assert "wrong-secret" not in result.stderr + result.stdout


def test_a_worker_processes_orders_through_both_logins_without_showing_the_secrets(
    secured_env: dict[str, str], tmp_path: Path
) -> None:
    password = secured_env["PIPELINE_KAFKA_SASL_PASSWORD"]
    registry_secret = secured_env["PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"].partition(":")[2]
    shop = Deployment(
        f"it-sasl-{uuid.uuid4().hex[:8]}",
        tmp_path,
        {**os.environ, **secured_env},
        # Registered by the command below, as before a deploy: the worker only looks them up.
        extra_env={"PIPELINE_AUTO_REGISTER_SCHEMAS": "false"},
    )
    registered = run_pipeline(shop.env, "schemas", "register", timeout=120)
    assert registered.returncode == 0, registered.stderr
    assert "registered version 1" in registered.stdout
    assert registry_secret not in registered.stdout + registered.stderr
    events = list(generate(LoadConfig(users=5, orders=40, skus=4, seed=3)))
    orders = Counter(event.key for event in events if event.stream == CONTRACT.order_created)
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
        answers = str(
            [
                worker.get(path)
                for path in ("/health", "/users/user-00000/orders", "/stock/SKU-0000")
            ]
        )
        with urllib.request.urlopen(worker.url + "/metrics", timeout=30) as response:
            answers += response.read().decode()
    finally:
        worker.stop()
    log = worker.log.read_text()
    for secret in (password, registry_secret):
        assert secret not in answers
        assert secret not in log
