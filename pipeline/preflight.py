"""The start-up check of how the broker and the registry are reached: TLS or not, trusted, and
under the name their certificate carries.

Left to themselves, the clients report a wrong CA file, a hostname that is not in the server's
certificate, or a plaintext client at a TLS listener as a broker that never answers: librdkafka
retries, aiokafka waits. Before a worker or a command builds its clients, one connection with the
same trust (``TrustedCas``) tells these apart and fails with the setting to fix. It sends no
login, so no secret can show in its messages.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from pipeline.settings import PREFIX, Settings, SettingsError, TrustedCas

TIMEOUT_S = 10.0
# OpenSSL's verify codes for a certificate that does not name the host (or IP) connected to.
NAME_MISMATCH = (62, 64)
API_VERSIONS_KEY = 18
CORRELATION_ID = 0x5A17


class ConnectionSettingsError(SettingsError):
    """The broker or the registry cannot be reached as the settings say; names the setting."""


@dataclass(frozen=True)
class Endpoint:
    what: str  # "the broker at 127.0.0.1:9093", "the registry at https://..."
    host: str
    port: int


def _host_port(server: str, default_port: int) -> tuple[str, int]:
    host, sep, port = server.strip().rpartition(":")
    if not sep or "]" in port:
        return server.strip().strip("[]"), default_port
    return host.strip("[]"), int(port)


@contextlib.contextmanager
def _connected(endpoint: Endpoint, timeout: float) -> Iterator[socket.socket]:
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def _unverified_certificate(endpoint: Endpoint, timeout: float) -> bytes | None:
    """The server's certificate (DER; b"" if it sent none) from a TLS handshake that checks
    nothing; None if the server does not complete one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            _connected(endpoint, timeout) as sock,
            context.wrap_socket(sock, server_hostname=endpoint.host) as tls,
        ):
            return tls.getpeercert(binary_form=True) or b""
    except (OSError, ssl.SSLError):
        return None


def _speaks_tls(endpoint: Endpoint, timeout: float) -> bool:
    """True if the server completes a TLS handshake (its certificate unchecked)."""
    return _unverified_certificate(endpoint, timeout) is not None


def _certificate_names(endpoint: Endpoint, timeout: float) -> str:
    """The DNS names and IPs the server's certificate carries, for the error message."""
    from cryptography import x509

    der = _unverified_certificate(endpoint, timeout)
    if not der:
        return "other names"
    try:
        sans = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (ValueError, x509.ExtensionNotFound):
        return "other names"
    names = [str(name.value) for name in sans.value]
    return ", ".join(names) if names else "no name"


def _check_tls(
    endpoint: Endpoint,
    trusted: TrustedCas,
    address_setting: str,
    protocol_hint: str,
    timeout: float,
) -> None:
    """One handshake with ``trusted``'s context; raises naming the setting at fault."""
    context = trusted.context()
    try:
        with (
            _connected(endpoint, timeout) as sock,
            context.wrap_socket(sock, server_hostname=endpoint.host),
        ):
            return
    except ssl.SSLCertVerificationError as error:
        reason = error.verify_message
        if error.verify_code in NAME_MISMATCH:
            names = _certificate_names(endpoint, timeout)
            raise ConnectionSettingsError(
                f"{endpoint.what} presents a certificate for {names}, not for {endpoint.host} "
                f"({reason}): {address_setting} must name the server as its certificate does"
            ) from None
        raise ConnectionSettingsError(
            f"{endpoint.what} presents a certificate that {trusted.describe()} does not vouch "
            f"for ({reason}): set {trusted.setting} to the CA bundle that signed it"
        ) from None
    except (ssl.SSLError, ConnectionError) as error:
        raise ConnectionSettingsError(
            f"{endpoint.what} does not answer TLS ({error.__class__.__name__}: {error}): "
            f"{protocol_hint}"
        ) from None
    except TimeoutError:
        raise ConnectionSettingsError(
            f"{endpoint.what} did not finish a TLS handshake in {timeout:.0f} s: {protocol_hint}"
        ) from None


def _closed_on_plaintext(endpoint: Endpoint, request: bytes, answer: int, timeout: float) -> bool:
    """True if the server closes the connection on ``request`` sent in the clear before
    ``answer`` bytes came back: what a TLS server does with bytes that are not a handshake. A
    server that answers, or stays silent (busy, or a proxy), is left to the clients."""
    try:
        with _connected(endpoint, timeout) as sock:
            sock.sendall(request)
            received = 0
            while received < answer:
                chunk = sock.recv(answer - received)
                if not chunk:
                    return True
                received += len(chunk)
    except (ConnectionResetError, BrokenPipeError):
        return True
    except OSError:
        return False
    return False


def _api_versions_request() -> bytes:
    """ApiVersions v0, which every Kafka listener answers before any login."""
    client_id = b"pipeline-preflight"
    body = struct.pack(">hhih", API_VERSIONS_KEY, 0, CORRELATION_ID, len(client_id)) + client_id
    return struct.pack(">i", len(body)) + body


def _http_request(endpoint: Endpoint, path: str) -> bytes:
    return (
        f"HEAD {path or '/'} HTTP/1.1\r\nHost: {endpoint.host}:{endpoint.port}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def _first_reachable(servers: list[Endpoint], timeout: float) -> Endpoint | None:
    """The first server that accepts a TCP connection; None: none does (the clients say so,
    and retry, as they would for a broker that is still starting)."""
    for endpoint in servers:
        try:
            with _connected(endpoint, timeout):
                return endpoint
        except OSError:
            continue
    return None


def check_kafka(settings: Settings, timeout: float = TIMEOUT_S) -> None:
    """Raise ConnectionSettingsError if the first reachable bootstrap server's listener does
    not speak what PIPELINE_KAFKA_SECURITY_PROTOCOL says, or (TLS) is not trusted."""
    security = settings.kafka_security
    servers = [
        Endpoint(f"the broker at {server.strip()}", *_host_port(server, 9092))
        for server in settings.kafka_bootstrap_servers.split(",")
        if server.strip()
    ]
    endpoint = _first_reachable(servers, timeout)
    if endpoint is None:
        return
    protocol_setting = f"{PREFIX}KAFKA_SECURITY_PROTOCOL={security.protocol}"
    if security.tls is not None:
        plain = "SASL_PLAINTEXT" if security.protocol.startswith("SASL") else "PLAINTEXT"
        _check_tls(
            endpoint,
            security.tls,
            f"{PREFIX}KAFKA_BOOTSTRAP_SERVERS",
            f"{protocol_setting} expects a TLS listener: use {plain} for this one, or the "
            f"TLS listener's address in {PREFIX}KAFKA_BOOTSTRAP_SERVERS",
            timeout,
        )
        return
    closed = _closed_on_plaintext(endpoint, _api_versions_request(), 8, timeout)
    if closed and _speaks_tls(endpoint, timeout):
        tls = "SASL_SSL" if security.protocol.startswith("SASL") else "SSL"
        raise ConnectionSettingsError(
            f"{endpoint.what} wants TLS, and {protocol_setting} speaks none: set it to {tls} "
            f"(and {PREFIX}KAFKA_SSL_CAFILE to the CA bundle that signed the broker's "
            "certificate, unless the system's CAs vouch for it)"
        )


def check_registry(settings: Settings, timeout: float | None = None) -> None:
    """Raise ConnectionSettingsError if the registry does not speak what the scheme of
    PIPELINE_SCHEMA_REGISTRY_URL says, or (https) is not trusted."""
    timeout = float(timeout or settings.schema_registry_timeout_s)
    url = urlsplit(settings.schema_registry_url)
    default_port = 443 if url.scheme == "https" else 80
    endpoint = Endpoint(
        f"the registry at {settings.schema_registry_url}",
        url.hostname or "",
        url.port or default_port,
    )
    if _first_reachable([endpoint], timeout) is None:
        return
    url_setting = f"{PREFIX}SCHEMA_REGISTRY_URL"
    trusted = settings.registry_tls
    if trusted is not None:
        _check_tls(
            endpoint,
            trusted,
            url_setting,
            f"{url_setting} must start with http:// for this server",
            timeout,
        )
        return
    closed = _closed_on_plaintext(endpoint, _http_request(endpoint, url.path), 5, timeout)
    if closed and _speaks_tls(endpoint, timeout):
        raise ConnectionSettingsError(
            f"{endpoint.what} serves HTTPS: {url_setting} must start with https:// (and "
            f"{PREFIX}SCHEMA_REGISTRY_SSL_CAFILE name the CA bundle that signed its certificate, "
            "unless the system's CAs vouch for it)"
        )


def check(settings: Settings, kafka: bool = True, registry: bool = True) -> Settings:
    """The checks a worker or a command runs before it builds its clients; ``settings``."""
    if kafka:
        check_kafka(settings)
    if registry:
        check_registry(settings)
    return settings
