"""pipeline.preflight against small servers of the test's own on loopback: a TLS server with a
certificate of a test CA for 127.0.0.1, a plain HTTP server, a server that closes on bytes that
are not a TLS handshake, and one that never answers."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from pipeline.preflight import ConnectionSettingsError, check_kafka, check_registry
from pipeline.settings import Settings, SettingsError

Handler = Callable[[socket.socket], None]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def other_ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("other") / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def serve(handler: Handler) -> Iterator[int]:
    """A loopback server that runs ``handler`` on each connection; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture(scope="module")
def tls_port(ca: trustme.CA) -> Iterator[int]:
    """A TLS server for 127.0.0.1 (only) that answers any request with an HTTP 200."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1024)
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (OSError, ssl.SSLError):
            # Plaintext bytes, or a client that refused the certificate: closed, as a TLS
            # server does.
            conn.close()

    yield from serve(handle)


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                pass

    yield from serve(handle)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    held: list[socket.socket] = []
    yield from serve(held.append)  # accepted, never answered, never closed
    for conn in held:
        conn.close()


def registry(url: str, **env: str) -> Settings:
    return Settings.from_env({"PIPELINE_SCHEMA_REGISTRY_URL": url, **env})


def kafka(bootstrap: str, protocol: str, **env: str) -> Settings:
    return Settings.from_env(
        {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "PIPELINE_KAFKA_SECURITY_PROTOCOL": protocol,
            **env,
        }
    )


def test_a_trusted_server_under_its_own_name_passes(tls_port: int, ca_file: str) -> None:
    check_registry(
        registry(f"https://127.0.0.1:{tls_port}/api", PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE=ca_file)
    )
    check_kafka(kafka(f"127.0.0.1:{tls_port}", "SASL_SSL", PIPELINE_KAFKA_SSL_CAFILE=ca_file))


def test_a_certificate_of_another_ca_names_the_ca_setting(
    tls_port: int, other_ca_file: str
) -> None:
    with pytest.raises(ConnectionSettingsError) as refused:
        check_kafka(kafka(f"127.0.0.1:{tls_port}", "SSL", PIPELINE_KAFKA_SSL_CAFILE=other_ca_file))
    message = str(refused.value)
    assert f"the broker at 127.0.0.1:{tls_port}" in message
    assert f"PIPELINE_KAFKA_SSL_CAFILE={other_ca_file} does not vouch for" in message
    # Unset: the system's CAs, which do not know the test CA either.
    with pytest.raises(
        ConnectionSettingsError, match=r"PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE \(unset\)"
    ):
        check_registry(registry(f"https://127.0.0.1:{tls_port}/api"))


def test_a_name_the_certificate_lacks_names_the_address_setting(
    tls_port: int, ca_file: str
) -> None:
    with pytest.raises(ConnectionSettingsError) as refused:
        check_kafka(kafka(f"localhost:{tls_port}", "SASL_SSL", PIPELINE_KAFKA_SSL_CAFILE=ca_file))
    message = str(refused.value)
    assert "presents a certificate for 127.0.0.1, not for localhost" in message
    assert "PIPELINE_KAFKA_BOOTSTRAP_SERVERS must name the server" in message
    with pytest.raises(ConnectionSettingsError, match="PIPELINE_SCHEMA_REGISTRY_URL must name"):
        check_registry(
            registry(
                f"https://localhost:{tls_port}/api", PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE=ca_file
            )
        )


def test_a_plaintext_client_at_a_tls_server_is_told_to_use_tls(tls_port: int) -> None:
    with pytest.raises(ConnectionSettingsError) as refused:
        check_kafka(kafka(f"127.0.0.1:{tls_port}", "SASL_PLAINTEXT"))
    assert "PIPELINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT speaks none: set it to SASL_SSL" in (
        str(refused.value)
    )
    with pytest.raises(ConnectionSettingsError, match="set it to SSL "):
        check_kafka(kafka(f"127.0.0.1:{tls_port}", "PLAINTEXT"))
    with pytest.raises(ConnectionSettingsError, match="must start with https://"):
        check_registry(registry(f"http://127.0.0.1:{tls_port}/api"))


def test_a_tls_client_at_a_plaintext_server_is_told_it_does_not_answer_tls(
    http_port: int, ca_file: str
) -> None:
    with pytest.raises(ConnectionSettingsError) as refused:
        check_registry(
            registry(
                f"https://127.0.0.1:{http_port}/api", PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE=ca_file
            )
        )
    assert "does not answer TLS" in str(refused.value)
    assert "PIPELINE_SCHEMA_REGISTRY_URL must start with http://" in str(refused.value)
    check_registry(registry(f"http://127.0.0.1:{http_port}/api"))  # as it should be


def test_a_silent_or_absent_server_is_left_to_the_clients_within_the_timeout(
    silent_port: int, ca_file: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    check_kafka(kafka(f"127.0.0.1:{silent_port}", "PLAINTEXT"), timeout=1)
    check_registry(registry(f"http://127.0.0.1:{silent_port}/api"), timeout=1)
    assert time.monotonic() - started < 5
    with pytest.raises(ConnectionSettingsError, match="did not finish a TLS handshake in 1 s"):
        check_kafka(
            kafka(f"127.0.0.1:{silent_port}", "SSL", PIPELINE_KAFKA_SSL_CAFILE=ca_file), timeout=1
        )
    # Nobody listening: the clients report it (and retry) as before.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    check_kafka(kafka(f"127.0.0.1:{port}", "SASL_SSL", PIPELINE_KAFKA_SSL_CAFILE=ca_file))


def test_a_command_with_a_bad_ca_file_exits_1_naming_it_without_a_traceback(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    env = {
        "PIPELINE_ENV_FILE": str(tmp_path / "none.env"),
        "PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "PIPELINE_KAFKA_SSL_CAFILE": str(tmp_path / "missing.pem"),
    }
    for command in (["topics", "list"], ["dlq", "list"], ["loadgen", "--orders", "1"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, result.output
        assert f"PIPELINE_KAFKA_SSL_CAFILE={tmp_path / 'missing.pem'}: no such file" in (
            result.output
        )
        assert not isinstance(result.exception, SettingsError)  # a ClickException's exit
