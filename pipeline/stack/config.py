"""What the local stack's servers are told: pure functions, tested without starting anything."""

from __future__ import annotations

import base64
import secrets
import socket
import uuid
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
    # A SASL_PLAINTEXT listener for clients, when the stack runs with --sasl.
    sasl_port: int | None = None

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


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def plan_nodes(
    count: int, state_dir: Path, ports: list[int], sasl: bool = False
) -> list[KafkaNode]:
    """``count`` nodes on ``ports``: two per node (broker, controller), three with ``sasl``."""
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
        )
        for i in range(count)
    ]


def kafka_properties(
    node: KafkaNode, nodes: list[KafkaNode], sasl_user: SaslUser | None = None
) -> dict[str, str]:
    """``server.properties`` of one combined broker+controller node of a KRaft cluster.

    With ``sasl_user``, clients get a SASL_PLAINTEXT listener that takes the user by SCRAM or
    PLAIN; the brokers still talk to each other on their plaintext listener.
    """
    replicas = min(len(nodes), 3)
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    listeners = [f"PLAINTEXT://{HOST}:{node.broker_port}"]
    if sasl_user is not None and node.sasl_port is not None:
        listeners.append(f"SASL_PLAINTEXT://{HOST}:{node.sasl_port}")
    sasl: dict[str, str] = {}
    if sasl_user is not None:
        listener = "listener.name.sasl_plaintext"
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
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": ",".join([*listeners, f"CONTROLLER://{HOST}:{node.controller_port}"]),
        "advertised.listeners": ",".join(listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": (
            "PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT"
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
        "log.retention.hours": "24",
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


def registry_jvm_args(port: int, management_port: int, heap_mb: int) -> list[str]:
    """Apicurio Registry 3.x, in-memory storage, Confluent-compatible API, global BACKWARD."""
    return [
        f"-Xmx{heap_mb}m",
        "-XX:+UseG1GC",
        f"-Dquarkus.http.host={HOST}",
        f"-Dquarkus.http.port={port}",
        # Quarkus' health/metrics interface listens on 0.0.0.0:9000 by default: a second
        # registry on the machine would fail to bind, and it need not face the network.
        f"-Dquarkus.management.host={HOST}",
        f"-Dquarkus.management.port={management_port}",
        # In-memory H2 is Apicurio 3's default storage; say so, so an upgrade cannot change it.
        "-Dapicurio.storage.kind=sql",
        "-Dapicurio.storage.sql.kind=h2",
        "-Dapicurio.rules.global.compatibility=BACKWARD",
    ]


def env_file_text(
    bootstrap: str, registry_url: str, replication_factor: int, sasl_user: SaslUser | None = None
) -> str:
    text = (
        "# Written by `pipeline stack up`; read by pipeline.settings. Removed by `stack down`.\n"
        f"PIPELINE_KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
        f"PIPELINE_SCHEMA_REGISTRY_URL={registry_url}\n"
        f"PIPELINE_REPLICATION_FACTOR={replication_factor}\n"
    )
    if sasl_user is not None:
        text += (
            "PIPELINE_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT\n"
            f"PIPELINE_KAFKA_SASL_MECHANISM={SCRAM_MECHANISM}\n"
            f"PIPELINE_KAFKA_SASL_USERNAME={sasl_user.name}\n"
            f"PIPELINE_KAFKA_SASL_PASSWORD={sasl_user.password}\n"
        )
    return text
