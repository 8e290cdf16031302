"""What the local stack's servers are told: pure functions, tested without starting anything."""

from __future__ import annotations

import base64
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REGISTRY_API = "/apis/ccompat/v7"


@dataclass(frozen=True)
class KafkaNode:
    node_id: int
    broker_port: int
    controller_port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.broker_port}"


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


def plan_nodes(count: int, state_dir: Path, ports: list[int]) -> list[KafkaNode]:
    if count < 1:
        raise ValueError("a cluster needs at least one broker")
    if len(ports) != 2 * count:
        raise ValueError(f"{count} nodes need {2 * count} ports, got {len(ports)}")
    return [
        KafkaNode(
            node_id=i + 1,
            broker_port=ports[2 * i],
            controller_port=ports[2 * i + 1],
            data_dir=state_dir / f"kafka-{i + 1}" / "data",
        )
        for i in range(count)
    ]


def kafka_properties(node: KafkaNode, nodes: list[KafkaNode]) -> dict[str, str]:
    """``server.properties`` of one combined broker+controller node of a KRaft cluster."""
    replicas = min(len(nodes), 3)
    voters = ",".join(f"{n.node_id}@{HOST}:{n.controller_port}" for n in nodes)
    return {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "listeners": f"PLAINTEXT://{HOST}:{node.broker_port},CONTROLLER://{HOST}:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{node.broker_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
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


def env_file_text(bootstrap: str, registry_url: str, replication_factor: int) -> str:
    return (
        "# Written by `pipeline stack up`; read by pipeline.settings. Removed by `stack down`.\n"
        f"PIPELINE_KAFKA_BOOTSTRAP_SERVERS={bootstrap}\n"
        f"PIPELINE_SCHEMA_REGISTRY_URL={registry_url}\n"
        f"PIPELINE_REPLICATION_FACTOR={replication_factor}\n"
    )
