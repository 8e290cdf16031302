"""Against a stack whose broker takes clients on SASL_SSL only and whose registry serves HTTPS
only, with basic auth (`pipeline stack up --tls --registry-auth`; certificates of a CA made at
its start): a main and a points worker process orders exactly once, their views are exact, and
the commands and the load generator work, all by settings alone; a missing or wrong CA file, a
hostname the certificate does not carry and a plaintext client each stop a worker or a command
at start-up, soon, naming the setting to fix and no secret."""

from __future__ import annotations

import os
import stat
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import trustme
from confluent_kafka import Producer

from pipeline.dev.loadgen import CONTRACT, LoadConfig, generate
from pipeline.dev.stack.launcher import Stack
from pipeline.dev.workers import POINTS_APP, Deployment, WorkerProcess, wait_for
from pipeline.settings import read_env_file
from tests.integration.exactly_once import assert_derived_exact
from tests.integration.harness import points_match, run_pipeline, view_mismatches, views_match

pytestmark = pytest.mark.integration

# Orders from `pipeline loadgen` with these options, and the same events generated here.
LOAD = LoadConfig(users=6, orders=80, skus=5, restock_every=10, seed=11)
LOAD_OPTIONS = tuple(
    item
    for option, value in [
        ("--users", LOAD.users),
        ("--orders", LOAD.orders),
        ("--skus", LOAD.skus),
        ("--restock-every", LOAD.restock_every),
        ("--seed", LOAD.seed),
    ]
    for item in (option, str(value))
)


@pytest.fixture(scope="module")
def tls_env(tls_stack: Stack) -> dict[str, str]:
    """The PIPELINE_* settings that `stack up --tls --registry-auth` wrote."""
    return read_env_file(tls_stack.env_file)


@pytest.fixture(scope="module")
def secrets(tls_env: dict[str, str]) -> tuple[str, str]:
    """The SASL password and the registry client secret: never to be shown."""
    return (
        tls_env["PIPELINE_KAFKA_SASL_PASSWORD"],
        tls_env["PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH"].partition(":")[2],
    )


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA file that did not sign the stack's certificates."""
    path = tmp_path_factory.mktemp("other-ca") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_env_file_sends_every_client_to_the_tls_listener_and_the_https_registry(
    tls_stack: Stack, tls_env: dict[str, str]
) -> None:
    state = tls_stack.state()
    assert state is not None
    assert tls_env["PIPELINE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert tls_env["PIPELINE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-256"
    assert tls_env["PIPELINE_SCHEMA_REGISTRY_URL"].startswith("https://127.0.0.1:")
    ca = Path(tls_env["PIPELINE_KAFKA_SSL_CAFILE"])
    assert (
        ca
        == Path(tls_env["PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE"])
        == tls_stack.state_dir / ("tls/ca.pem")
    )
    assert state.tls_ca == str(ca)
    assert stat.S_IMODE(ca.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((ca.parent / "server-key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE(tls_stack.env_file.stat().st_mode) == 0o600
    # The broker's own listener (brokers among themselves) is not where clients are sent.
    props = (tls_stack.state_dir / "kafka-1" / "server.properties").read_text()
    assert f"SASL_SSL://{state.bootstrap}" in props


def test_workers_commands_and_the_load_generator_work_over_tls_by_settings_alone(
    tls_env: dict[str, str], secrets: tuple[str, str], tmp_path: Path
) -> None:
    shop = Deployment(
        f"it-tls-{uuid.uuid4().hex[:8]}",
        tmp_path,
        {**os.environ, **tls_env},
        extra_env={
            "PIPELINE_AUTO_REGISTER_SCHEMAS": "false",
            "PIPELINE_PROCESSING_GUARANTEE": "exactly_once",
            "PIPELINE_PARTITIONS": "4",
        },
    )
    outputs: list[str] = []
    outputs.append(succeeded(run_pipeline(shop.env, "schemas", "register")))
    assert "registered version 1" in outputs[-1]
    outputs.append(succeeded(run_pipeline(shop.env, "schemas", "check")))
    outputs.append(succeeded(run_pipeline(shop.env, "topics", "create")))
    assert f"created {shop.name}.order_created" in outputs[-1]

    workers: list[WorkerProcess] = []
    try:
        main = shop.worker("main").start()
        points = shop.worker("points", app=POINTS_APP).start()
        workers += [main, points]
        main.wait_healthy()
        points.wait_healthy()
        outputs.append(succeeded(run_pipeline(shop.env, "loadgen", *LOAD_OPTIONS)))
        assert "0 failed" in outputs[-1]
        events = list(generate(LOAD))

        wait_for("the shop's views", lambda: views_match(main, events), timeout=180)
        wait_for("the points", lambda: points_match(points, events), timeout=180)
        assert view_mismatches(main, events) == []
        assert_derived_exact(shop.settings, events, "exactly_once", "over TLS")

        listing = succeeded(run_pipeline(shop.env, "topics", "list"))
        outputs.append(listing)
        order_lines = [
            line for line in listing.splitlines() if line.startswith(shop.names.order_created + " ")
        ]
        orders = sum(1 for event in events if event.stream == CONTRACT.order_created)
        assert order_lines and order_lines[0].split()[-1] == str(orders), listing

        # A record nobody can decode: dead-lettered by each agent reading it, the shop's two
        # and the points service's (in their transactions), listed and replayed.
        producer = Producer(shop.settings.kafka_client_config())
        producer.produce(shop.names.order_created, key=b"user-poison", value=b"not avro")
        assert producer.flush(30) == 0

        def listed() -> str | None:
            result = run_pipeline(shop.env, "dlq", "list")
            assert result.returncode == 0, result.stdout + result.stderr
            return result.stdout if "3 dead letter(s)" in result.stdout else None

        outputs.append(wait_for("the dead letter", listed, timeout=120))
        assert outputs[-1].count("key=b'user-poison'") == 3
        outputs.append(succeeded(run_pipeline(shop.env, "dlq", "replay")))
        assert "replayed 3 dead letter(s)" in outputs[-1]

        answers = str([main.get("/health"), points.get("/health")])
        for worker in (main, points):
            with urllib.request.urlopen(worker.url + "/metrics", timeout=30) as response:
                answers += response.read().decode()
    finally:
        for worker in workers:
            worker.stop()
    logs = "".join(worker.log.read_text() for worker in workers)
    for secret in secrets:
        assert secret not in answers
        assert secret not in logs
        assert secret not in "".join(outputs)


def _wrong(tls_env: dict[str, str], other_ca: str, case: str) -> tuple[dict[str, str], str]:
    """Settings with one thing wrong, and the setting the error must name."""
    bootstrap = tls_env["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"]
    registry = tls_env["PIPELINE_SCHEMA_REGISTRY_URL"]
    cases = {
        "missing-kafka-ca": (
            {"PIPELINE_KAFKA_SSL_CAFILE": "/no/such/ca.pem"},
            "PIPELINE_KAFKA_SSL_CAFILE=/no/such/ca.pem: no such file",
        ),
        "wrong-kafka-ca": ({"PIPELINE_KAFKA_SSL_CAFILE": other_ca}, "PIPELINE_KAFKA_SSL_CAFILE"),
        "kafka-hostname": (
            {"PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap.replace("127.0.0.1", "localhost")},
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS must name the server as its certificate does",
        ),
        "plaintext-kafka": (
            {"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"},
            "PIPELINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT speaks none: set it to SASL_SSL",
        ),
        "missing-registry-ca": (
            {"PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE": "/no/such/ca.pem"},
            "PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE=/no/such/ca.pem: no such file",
        ),
        "wrong-registry-ca": (
            {"PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE": other_ca},
            "set PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE to the CA bundle that signed it",
        ),
        "registry-hostname": (
            {"PIPELINE_SCHEMA_REGISTRY_URL": registry.replace("127.0.0.1", "localhost")},
            "PIPELINE_SCHEMA_REGISTRY_URL must name the server as its certificate does",
        ),
        "plaintext-registry": (
            {"PIPELINE_SCHEMA_REGISTRY_URL": registry.replace("https://", "http://")},
            "PIPELINE_SCHEMA_REGISTRY_URL must start with https://",
        ),
    }
    overrides, named = cases[case]
    return {**tls_env, **overrides}, named


KAFKA_CASES = ["missing-kafka-ca", "wrong-kafka-ca", "kafka-hostname", "plaintext-kafka"]
REGISTRY_CASES = [
    "missing-registry-ca",
    "wrong-registry-ca",
    "registry-hostname",
    "plaintext-registry",
]


@pytest.mark.parametrize("case", KAFKA_CASES + REGISTRY_CASES)
def test_a_command_with_a_wrong_tls_setting_exits_1_at_once_naming_it(
    tls_env: dict[str, str], secrets: tuple[str, str], other_ca: str, case: str
) -> None:
    env, named = _wrong(tls_env, other_ca, case)
    commands = (
        [("topics", "list"), ("dlq", "list"), ("loadgen", "--orders", "1")]
        if case in KAFKA_CASES
        else [("schemas", "check"), ("loadgen", "--orders", "1")]
    )
    for command in commands:
        started = time.monotonic()
        result = run_pipeline({**env, "PIPELINE_TOPIC_PREFIX": "it-tls-wrong."}, *command)
        took = time.monotonic() - started
        said = result.stdout + result.stderr
        assert result.returncode == 1, (command, said)
        assert named in result.stderr, (command, said)
        assert "Traceback" not in said
        assert took < 30, (command, took)
        for secret in secrets:
            assert secret not in said


@pytest.mark.parametrize(
    "case",
    [
        "missing-kafka-ca",
        "wrong-kafka-ca",
        "kafka-hostname",
        "plaintext-kafka",
        "wrong-registry-ca",
    ],
)
def test_a_worker_with_a_wrong_tls_setting_stops_at_start_up_naming_it(
    tls_env: dict[str, str], secrets: tuple[str, str], other_ca: str, case: str, tmp_path: Path
) -> None:
    env, named = _wrong(tls_env, other_ca, case)
    shop = Deployment(f"it-tls-bad-{uuid.uuid4().hex[:8]}", tmp_path, {**os.environ, **env})
    worker = shop.worker("refused").start()
    assert worker.process is not None
    assert worker.process.wait(120) != 0
    log = worker.log.read_text()
    assert named in log
    for secret in secrets:
        assert secret not in log
