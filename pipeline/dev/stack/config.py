"""What the local stack's servers are told: pure functions, tested without starting anything."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
REGISTRY_API = "/apis/ccompat/v7"


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    data_dir: Path
    # A SASL listener for clients, when the stack runs with --sasl (SASL_PLAINTEXT) or with
    # --tls (SASL_SSL).
    sasl_port: int | None = None
    client_protocol: str = "SASL_PLAINTEXT"

    @property
    def bootstrap(self) -> str:
        """Where clients connect: the SASL listener when there is one."""
        return f"{HOST}:{self.sasl_port or self.broker_port}"


@dataclass(frozen=True)
class SaslUser:
    """The one client user of a --sasl stack; the password is made anew for each stack."""

    name: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls, name: str = "pipeline") -> SaslUser:
        return cls(name=name, password=secrets.token_urlsafe(24))

    def scram_credential(self) -> str:
        """The StorageTool ``--add-scram`` argument that creates the user in a KRaft cluster."""
        return f"{SCRAM_MECHANISM}=[name={self.name},password={self.password}]"


SCRAM_MECHANISM = "SCRAM-SHA-256"


@dataclass(frozen=True)
class StackTls:
    """The PEM files of a --tls stack, made by pipeline.dev.stack.certs at each start: a CA
    of its own, and one server certificate it signed for HOST (by IP only: a client that
    asks for ``localhost`` meets a hostname mismatch), used by the broker and the registry."""

    folder: Path

    @property
    def ca(self) -> Path:
        """What clients trust: PIPELINE_KAFKA_SSL_CAFILE and PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE."""
        return self.folder / "ca.pem"

    @property
    def chain(self) -> Path:
        """The server certificate (the CA's is not sent: clients have it)."""
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        """The server's private key, PKCS#8, unencrypted; readable by the owner alone."""
        return self.folder / "server-key.pem"

    @property
    def keystore(self) -> Path:
        """Key and chain in one file: Kafka's PEM keystore (``ssl.keystore.type=PEM``)."""
        return self.folder / "server-keystore.pem"


@dataclass(frozen=True)
class RegistryClient:
    """The one client of a --registry-auth stack's registry: an OIDC client of the stack's
    Keycloak, whose id and secret are also the HTTP basic login the registry takes (Apicurio
    trades them for a token with the client-credentials grant). The secret is made anew for
    each stack."""

    client_id: str
    secret: str = field(repr=False)

    @classmethod
    def generate(cls, client_id: str = "pipeline") -> RegistryClient:
        return cls(client_id=client_id, secret=secrets.token_urlsafe(24))

    @property
    def basic_auth(self) -> str:
        """``user:password`` as PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH takes it."""
        return f"{self.client_id}:{self.secret}"


# What the local stack's broker keeps of each partition before deleting its oldest records.
LOG_RETENTION_BYTES = 1024 * 1024 * 1024


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now, all distinct (held open until all are chosen)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_cluster_id(random_bytes: Callable[[], bytes] = lambda: uuid.uuid4().bytes) -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding, never starting
    with '-', which the storage tool would read as an option (Kafka's own Uuid.randomUuid
    draws again in that case too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes()).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def plan_nodes(
    count: int, state_dir: Path, ports: list[int], sasl: bool = False, tls: bool = False
) -> list[KafkaNode]:
    """``count`` nodes on ``ports``: two per node (broker, controller), three with ``sasl``
    (the client listener), whose listener speaks TLS with ``tls``."""
    if count < 1:
        raise ValueError("a cluster needs at least one broker")
    per_node = 3 if sasl else 2
    if len(ports) != per_node * count:
        raise ValueError(f"{count} nodes need {per_node * count} ports, got {len(ports)}")
    return [
        KafkaNode(
            node_id=i + 1,
            broker_port=ports[per_node * i],
            controller_port=ports[per_node * i + 1],
            data_dir=state_dir / f"kafka-{i + 1}" / "data",
            sasl_port=ports[per_node * i + 2] if sasl else None,
            client_protocol="SASL_SSL" if tls else "SASL_PLAINTEXT",
        )
        for i in range(count)
    ]


def kafka_properties(
    node: KafkaNode,
    nodes: list[KafkaNode],
    sasl_user: SaslUser | None = None,
    tls: StackTls | None = None,
) -> dict[str, str]:
    """``server.properties`` of one combined broker+controller node of a KRaft cluster.

    With ``sasl_user``, clients get a SASL listener that takes the user by SCRAM or PLAIN:
    SASL_PLAINTEXT, or with ``tls`` SASL_SSL, whose certificate and key are ``tls``'s PEM
    keystore. The brokers still talk to each other on their plaintext listener (loopback).
    """
    replicas = min(len(nodes), 3)
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    listeners = [f"PLAINTEXT://{HOST}:{node.broker_port}"]
    if sasl_user is not None and node.sasl_port is not None:
        listeners.append(f"{node.client_protocol}://{HOST}:{node.sasl_port}")
    sasl: dict[str, str] = {}
    if sasl_user is not None:
        listener = f"listener.name.{node.client_protocol.lower()}"
        sasl = {
            "sasl.enabled.mechanisms": f"{SCRAM_MECHANISM},PLAIN",
            f"{listener}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            f"{listener}.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'user_{sasl_user.name}="{sasl_user.password}";'
            ),
        }
        if tls is not None:
            sasl.update(
                {
                    f"{listener}.ssl.keystore.type": "PEM",
                    f"{listener}.ssl.keystore.location": str(tls.keystore),
                    # Clients are not asked for a certificate: they log in by SASL.
                    f"{listener}.ssl.client.auth": "none",
                }
            )
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": ",".join([*listeners, f"CONTROLLER://{HOST}:{node.controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL,"
            "CONTROLLER:PLAINTEXT"
        ),
        **sasl,
        "log.dirs": str(node.data_dir),
        "num.partitions": "1",
        "offsets.topic.replication.factor": str(replicas),
        "transaction.state.log.replication.factor": str(replicas),
        "share.coordinator.state.topic.replication.factor": str(replicas),
        # With one broker an ISR of 2 could never be met; with three it is what production runs.
        "transaction.state.log.min.isr": "2" if replicas >= 3 else "1",
        "min.insync.replicas": "2" if replicas >= 3 else "1",
        # Tests start and stop consumers often: do not wait 3 s before each first rebalance.
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        # Records carry their event time as their Kafka timestamp (docs/windows.md), and the
        # load generator's events are from 2026-01-01: time-based retention would delete
        # them, derived and re-keyed records included, at the broker's next check. Bounded
        # by size instead (per partition).
        "log.retention.ms": "-1",
        "log.retention.bytes": str(LOG_RETENTION_BYTES),
        "log.segment.bytes": str(64 * 1024 * 1024),
    }


def render_properties(props: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in props.items())


LOG4J2_PROPERTIES = """\
# Kafka broker logging for the local stack: INFO to stdout, which the launcher sends to a file.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


def kafka_jvm_args(heap_mb: int, log4j_config: Path) -> list[str]:
    return [
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 128)}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j_config}",
    ]


def registry_jvm_args(
    port: int,
    management_port: int,
    heap_mb: int,
    oidc_issuer: str | None = None,
    tls: StackTls | None = None,
) -> list[str]:
    """Apicurio Registry 3.x, in-memory storage, Confluent-compatible API, global BACKWARD.

    With ``oidc_issuer``, every request must be authenticated: by a bearer token of that
    realm, or by HTTP basic with a client id and secret of that realm, which Apicurio trades
    for a token (client-credentials grant) and caches. No roles: any client of the realm may
    read and write.

    With ``tls``, ``port`` serves HTTPS only (Quarkus' PEM certificate and key files), and no
    plain HTTP port is opened.
    """
    listen = [f"-Dquarkus.http.port={port}"]
    if tls is not None:
        listen = [
            f"-Dquarkus.http.ssl-port={port}",
            f"-Dquarkus.http.ssl.certificate.files={tls.chain}",
            f"-Dquarkus.http.ssl.certificate.key-files={tls.key}",
            "-Dquarkus.http.insecure-requests=disabled",
        ]
    auth = []
    if oidc_issuer is not None:
        auth = [
            "-Dquarkus.oidc.tenant-enabled=true",
            f"-Dquarkus.oidc.auth-server-url={oidc_issuer}",
            "-Dapicurio.authn.basic-client-credentials.enabled=true",
        ]
    return [
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        f"-Dquarkus.http.host={HOST}",
        *listen,
        # Quarkus' health/metrics interface listens on 0.0.0.0:9000 by default: a second
        # registry on the machine would fail to bind, and it need not face the network.
        f"-Dquarkus.management.host={HOST}",
        f"-Dquarkus.management.port={management_port}",
        # In-memory H2 is Apicurio 3's default storage; say so, so an upgrade cannot change it.
        "-Dapicurio.storage.kind=sql",
        "-Dapicurio.storage.sql.kind=h2",
        "-Dapicurio.rules.global.compatibility=BACKWARD",
        *auth,
    ]


KEYCLOAK_REALM = "shop-pipeline"

# Options Keycloak fixes when it is built (``kc.sh build``), once, in the download cache: an
# embedded H2 database in the stack's own folder; health and metrics off, so Keycloak opens no
# management interface (it would listen on 9000 by default).
KEYCLOAK_BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=false", "--metrics-enabled=false")
# The H2 database file ``--db=dev-file`` keeps under ``<kc.home.dir>/data/h2``.
KEYCLOAK_DATABASE_FILE = "keycloakdb.mv.db"


def keycloak_realm(client: RegistryClient) -> dict[str, object]:
    """The realm imported at Keycloak's start: one confidential client with a service
    account, which may only use the client-credentials grant."""
    return {
        "realm": KEYCLOAK_REALM,
        "enabled": True,
        "clients": [
            {
                "clientId": client.client_id,
                "name": "shop-pipeline workers and commands (schema registry login)",
                "enabled": True,
                "protocol": "openid-connect",
                "publicClient": False,
                "clientAuthenticatorType": "client-secret",
                "secret": client.secret,
                "serviceAccountsEnabled": True,
                "standardFlowEnabled": False,
                "implicitFlowEnabled": False,
                "directAccessGrantsEnabled": False,
            }
        ],
    }


def render_realm(client: RegistryClient) -> str:
    return json.dumps(keycloak_realm(client), indent=2) + "\n"


def keycloak_issuer(port: int) -> str:
    """The realm's URL: OIDC discovery is under it, and tokens name it as their issuer."""
    return f"http://{HOST}:{port}/realms/{KEYCLOAK_REALM}"


def keycloak_jvm_args(home: Path, dist: Path, heap_mb: int) -> list[str]:
    """What ``bin/kc.sh`` gives the JVM, with ``kc.home.dir`` at ``home``: a folder of the
    stack's own (its ``lib`` links to the distribution's) where Keycloak keeps its database
    and finds the realm to import, so the shared download is never written to."""
    return [
        f"-Xmx{heap_mb}m",
        "-Xms64m",
        "-XX:MetaspaceSize=96M",
        "-XX:MaxMetaspaceSize=256m",
        "-XX:+UseG1GC",
        "-XX:+ExitOnOutOfMemoryError",
        "-Dfile.encoding=UTF-8",
        "-Djava.awt.headless=true",
        "--add-opens=java.base/java.util=ALL-UNNAMED",
        "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
        "--add-opens=java.base/java.security=ALL-UNNAMED",
        "--add-opens=java.base/java.lang=ALL-UNNAMED",
        "--enable-native-access=ALL-UNNAMED",
        "-Duser.language=en",
        "-Duser.country=US",
        "-Djava.util.concurrent.ForkJoinPool.common.threadFactory="
        "io.quarkus.bootstrap.forkjoin.QuarkusForkJoinWorkerThreadFactory",
        f"-Dkc.home.dir={home}",
        f"-Djboss.server.config.dir={dist / 'conf'}",
        "-Djava.util.logging.manager=org.jboss.logmanager.LogManager",
        "-Dpicocli.disable.closures=true",
        "-cp",
        str(dist / "lib" / "quarkus-run.jar"),
        "io.quarkus.bootstrap.runner.QuarkusEntryPoint",
    ]


def keycloak_server_args(port: int) -> list[str]:
    """``start`` of the pre-built server on loopback, plain HTTP, one node, importing
    ``<home>/data/import/*.json`` (a realm that exists already is left as it is)."""
    return [
        "start",
        "--optimized",
        "--http-enabled=true",
        f"--http-host={HOST}",
        f"--http-port={port}",
        # Tokens name the issuer as clients reach it; nothing proxies this server.
        "--hostname-strict=false",
        # Not a cluster: the default cache stack would listen on every interface (JGroups).
        "--cache=local",
        "--import-realm",
    ]


def env_file_text(
    bootstrap: str,
    registry_url: str,
    replication_factor: int,
    sasl_user: SaslUser | None = None,
    registry_client: RegistryClient | None = None,
    tls: StackTls | None = None,
) -> str:
    text = (
        "# Written by `pipeline stack up`; read by pipeline.settings. Removed by `stack down`.\n"
        f"PIPELINE_KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
        f"PIPELINE_SCHEMA_REGISTRY_URL={registry_url}\n"
        f"PIPELINE_REPLICATION_FACTOR={replication_factor}\n"
    )
    if sasl_user is not None:
        text += (
            f"PIPELINE_KAFKA_SECURITY_PROTOCOL={'SASL_SSL' if tls else 'SASL_PLAINTEXT'}\n"
            f"PIPELINE_KAFKA_SASL_MECHANISM={SCRAM_MECHANISM}\n"
            f"PIPELINE_KAFKA_SASL_USERNAME={sasl_user.name}\n"
            f"PIPELINE_KAFKA_SASL_PASSWORD={sasl_user.password}\n"
        )
    if registry_client is not None:
        text += f"PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH={registry_client.basic_auth}\n"
    if tls is not None:
        text += (
            f"PIPELINE_KAFKA_SSL_CAFILE={tls.ca}\nPIPELINE_SCHEMA_REGISTRY_SSL_CAFILE={tls.ca}\n"
        )
    return text
