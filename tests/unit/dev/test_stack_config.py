"""The local stack's generated configuration, checked without starting anything."""

from __future__ import annotations

import contextlib
import json
import ssl
import stat
from pathlib import Path

import pytest

from pipeline.dev.stack import artifacts, config
from pipeline.dev.stack.certs import make_certificates
from pipeline.dev.stack.launcher import ServerProcess, StackState, is_alive
from pipeline.settings import Settings, read_env_text


def test_single_node_is_a_combined_kraft_node_with_replication_one(tmp_path: Path) -> None:
    (node,) = config.plan_nodes(1, tmp_path, [9092, 9093])
    props = config.kafka_properties(node, [node])
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["log.dirs"] == str(tmp_path / "kafka-1" / "data")


def test_three_nodes_share_one_quorum_and_replicate_internal_topics(tmp_path: Path) -> None:
    nodes = config.plan_nodes(3, tmp_path, [1, 2, 3, 4, 5, 6])
    all_props = [config.kafka_properties(n, nodes) for n in nodes]
    assert {p["controller.quorum.voters"] for p in all_props} == {
        "1@127.0.0.1:2,2@127.0.0.1:4,3@127.0.0.1:6"
    }
    assert [p["node.id"] for p in all_props] == ["1", "2", "3"]
    assert len({p["log.dirs"] for p in all_props}) == 3
    for props in all_props:
        assert props["offsets.topic.replication.factor"] == "3"
        assert props["min.insync.replicas"] == "2"
        assert props["transaction.state.log.min.isr"] == "2"


def test_plan_nodes_rejects_wrong_port_counts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need 4 ports"):
        config.plan_nodes(2, tmp_path, [1, 2, 3])
    with pytest.raises(ValueError, match="at least one"):
        config.plan_nodes(0, tmp_path, [])


def test_rendered_properties_are_key_value_lines() -> None:
    assert config.render_properties({"a": "1", "b.c": "x y"}) == "a=1\nb.c=x y\n"


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = config.free_ports(5)
    assert len(set(ports)) == 5
    assert all(1024 <= p <= 65535 for p in ports)


def test_cluster_id_is_22_url_safe_characters() -> None:
    cluster_id = config.new_cluster_id()
    assert len(cluster_id) == 22
    assert set(cluster_id) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    )
    assert cluster_id != config.new_cluster_id()


def test_registry_binds_both_interfaces_to_loopback_with_backward_compatibility() -> None:
    args = config.registry_jvm_args(8081, 9001, 256)
    assert "-Dquarkus.http.host=127.0.0.1" in args
    assert "-Dquarkus.http.port=8081" in args
    assert "-Dquarkus.management.host=127.0.0.1" in args
    assert "-Dquarkus.management.port=9001" in args
    assert "-Dapicurio.rules.global.compatibility=BACKWARD" in args
    assert "-Xmx256m" in args


def test_env_file_names_the_settings_the_pipeline_reads() -> None:
    text = config.env_file_text("127.0.0.1:1", "http://127.0.0.1:2/apis/ccompat/v7", 3)
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1",
        "PIPELINE_SCHEMA_REGISTRY_URL=http://127.0.0.1:2/apis/ccompat/v7",
        "PIPELINE_REPLICATION_FACTOR=3",
    ]


def test_kafka_pom_pins_the_broker_and_an_slf4j1_log4j2_binding() -> None:
    pom = artifacts.kafka_pom("4.1.1", "2.24.3")
    assert "<artifactId>kafka_2.13</artifactId>\n      <version>4.1.1</version>" in pom
    assert "<artifactId>log4j-slf4j-impl</artifactId>" in pom


def test_state_round_trips_and_a_dead_pid_is_not_alive(tmp_path: Path) -> None:
    state = StackState(
        brokers=1,
        bootstrap="127.0.0.1:1",
        registry_url="http://127.0.0.1:2/apis/ccompat/v7",
        processes=[
            ServerProcess(
                name="kafka-1",
                pid=2**22 + 1,
                start_ticks=1,
                log="x.log",
                command=["java", "kafka.Kafka", "server.properties"],
                cwd="/tmp",
            )
        ],
        kafka_version="4.1.1",
        apicurio_version="3.3.3",
    )
    state.save(tmp_path)
    loaded = StackState.load(tmp_path)
    assert loaded == state
    assert not is_alive(loaded.processes[0])


def test_sasl_adds_a_client_listener_that_takes_the_user_by_scram_or_plain(tmp_path: Path) -> None:
    user = config.SaslUser(name="pipeline", password="s3cret")
    (node,) = config.plan_nodes(1, tmp_path, [9092, 9093, 9094], sasl=True)
    assert node.bootstrap == "127.0.0.1:9094"  # clients go to the SASL listener
    props = config.kafka_properties(node, [node], user)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093"
    )
    assert props["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094"
    )
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-256,PLAIN"
    assert 'user_pipeline="s3cret"' in props["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert user.scram_credential() == "SCRAM-SHA-256=[name=pipeline,password=s3cret]"
    assert "s3cret" not in repr(user)


def test_sasl_env_file_carries_the_login_the_settings_read() -> None:
    user = config.SaslUser.generate()
    text = config.env_file_text("127.0.0.1:1", "http://127.0.0.1:2/apis/ccompat/v7", 1, user)
    settings = Settings.from_env(read_env_text(text))
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "pipeline",
        "sasl.password": user.password,
    }
    assert user.password != config.SaslUser.generate().password


def test_registry_auth_env_file_carries_the_basic_login_the_registry_client_uses() -> None:
    client = config.RegistryClient.generate()
    text = config.env_file_text(
        "127.0.0.1:1", "http://127.0.0.1:2/apis/ccompat/v7", 1, registry_client=client
    )
    settings = Settings.from_env(read_env_text(text))
    assert settings.registry_client_config()["basic.auth.user.info"] == (
        f"pipeline:{client.secret}"
    )
    assert len(client.secret) >= 24
    assert client.secret != config.RegistryClient.generate().secret
    assert client.secret not in repr(client)
    assert client.secret not in repr(settings)


def test_sasl_and_registry_auth_go_to_one_env_file_together() -> None:
    user, client = config.SaslUser.generate(), config.RegistryClient.generate()
    text = config.env_file_text(
        "127.0.0.1:1", "http://127.0.0.1:2/apis/ccompat/v7", 1, user, client
    )
    settings = Settings.from_env(read_env_text(text))
    assert settings.kafka_security.sasl_password == user.password
    assert settings.schema_registry_basic_auth == client.basic_auth


def test_realm_has_one_confidential_client_credentials_only_client() -> None:
    client = config.RegistryClient(client_id="pipeline", secret="s3cret")
    realm = config.keycloak_realm(client)
    assert realm["realm"] == config.KEYCLOAK_REALM
    assert realm["enabled"] is True
    clients = realm["clients"]
    assert isinstance(clients, list)
    (entry,) = clients
    assert entry["clientId"] == "pipeline"
    assert entry["secret"] == "s3cret"
    assert entry["publicClient"] is False
    assert entry["serviceAccountsEnabled"] is True
    assert not entry["standardFlowEnabled"]
    assert not entry["directAccessGrantsEnabled"]
    assert not entry["implicitFlowEnabled"]
    assert json.loads(config.render_realm(client)) == realm


def test_keycloak_listens_on_loopback_only_and_starts_prebuilt() -> None:
    args = config.keycloak_server_args(8180)
    assert args[:2] == ["start", "--optimized"]  # never rebuilds into the shared cache
    assert "--http-host=127.0.0.1" in args
    assert "--http-port=8180" in args
    assert "--cache=local" in args  # no JGroups listener on every interface
    assert "--import-realm" in args
    assert config.keycloak_issuer(8180) == "http://127.0.0.1:8180/realms/shop-pipeline"
    # Health and metrics off: no management interface on 9000.
    assert "--health-enabled=false" in config.KEYCLOAK_BUILD_OPTIONS
    assert "--metrics-enabled=false" in config.KEYCLOAK_BUILD_OPTIONS


def test_keycloak_home_is_the_stack_folder_and_the_jar_the_distribution(tmp_path: Path) -> None:
    args = config.keycloak_jvm_args(home=tmp_path / "kc", dist=tmp_path / "dist", heap_mb=384)
    assert "-Xmx384m" in args
    assert f"-Dkc.home.dir={tmp_path / 'kc'}" in args
    assert f"-Djboss.server.config.dir={tmp_path / 'dist' / 'conf'}" in args
    assert args[-3:] == [
        "-cp",
        str(tmp_path / "dist" / "lib" / "quarkus-run.jar"),
        "io.quarkus.bootstrap.runner.QuarkusEntryPoint",
    ]


def test_registry_with_an_issuer_takes_basic_logins_checked_by_it() -> None:
    issuer = "http://127.0.0.1:8180/realms/shop-pipeline"
    args = config.registry_jvm_args(8081, 9001, 256, oidc_issuer=issuer)
    assert "-Dquarkus.oidc.tenant-enabled=true" in args
    assert f"-Dquarkus.oidc.auth-server-url={issuer}" in args
    assert "-Dapicurio.authn.basic-client-credentials.enabled=true" in args
    assert not any("oidc" in arg or "authn" in arg for arg in config.registry_jvm_args(1, 2, 3))


def test_cluster_id_never_starts_with_a_dash() -> None:
    # A CI run failed when one did: kafka-storage read "-t -7igZ..." as a missing value.
    draws = iter([b"\xfb" + bytes(15), bytes(16)])  # the first encodes as "-wAA..."
    assert config.new_cluster_id(lambda: next(draws)) == "A" * 22


def test_tls_makes_the_client_listener_sasl_ssl_with_a_pem_keystore(tmp_path: Path) -> None:
    user = config.SaslUser(name="pipeline", password="s3cret")
    tls = config.StackTls(tmp_path / "tls")
    (node,) = config.plan_nodes(1, tmp_path, [9092, 9093, 9094], sasl=True, tls=True)
    assert node.bootstrap == "127.0.0.1:9094"
    props = config.kafka_properties(node, [node], user, tls)
    assert props["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093"
    )
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert props["inter.broker.listener.name"] == "PLAINTEXT"
    listener = "listener.name.sasl_ssl"
    assert props[f"{listener}.ssl.keystore.type"] == "PEM"
    assert props[f"{listener}.ssl.keystore.location"] == str(tls.keystore)
    assert f"{listener}.scram-sha-256.sasl.jaas.config" in props
    assert 'user_pipeline="s3cret"' in props[f"{listener}.plain.sasl.jaas.config"]
    assert not any(key.startswith("listener.name.sasl_plaintext") for key in props)


def test_tls_registry_serves_https_only_from_the_pem_files(tmp_path: Path) -> None:
    tls = config.StackTls(tmp_path)
    args = config.registry_jvm_args(8443, 9001, 256, tls=tls)
    assert "-Dquarkus.http.ssl-port=8443" in args
    assert f"-Dquarkus.http.ssl.certificate.files={tls.chain}" in args
    assert f"-Dquarkus.http.ssl.certificate.key-files={tls.key}" in args
    assert "-Dquarkus.http.insecure-requests=disabled" in args
    assert not any(arg.startswith("-Dquarkus.http.port=") for arg in args)
    assert "-Dquarkus.http.port=8081" in config.registry_jvm_args(8081, 9001, 256)


def test_certificates_are_signed_by_a_new_ca_for_the_loopback_ip_only(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "tls")
    assert stat.S_IMODE(tls.folder.stat().st_mode) == 0o700
    for secret in (tls.key, tls.keystore):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert tls.key.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert tls.keystore.read_text().count("BEGIN CERTIFICATE") == 1  # the CA is not sent
    # The chain and key make a server that a client trusting only the CA file accepts.
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tls.chain, tls.key)
    client = ssl.create_default_context(cafile=tls.ca)
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    ends = (
        client.wrap_bio(client_in, client_out, server_hostname=config.HOST),
        server.wrap_bio(server_in, server_out, server_side=True),
    )
    for _ in range(10):
        for end in ends:
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert ends[0].getpeercert()["subjectAltName"] == (("IP Address", config.HOST),)
    assert make_certificates(tmp_path / "other").ca.read_bytes() != tls.ca.read_bytes()


def test_tls_env_file_names_the_ca_file_both_clients_trust(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path / "tls")
    user = config.SaslUser.generate()
    text = config.env_file_text(
        "127.0.0.1:1", "https://127.0.0.1:2/apis/ccompat/v7", 1, user, tls=tls
    )
    settings = Settings.from_env(read_env_text(text))
    kafka = settings.kafka_client_config()
    assert kafka["security.protocol"] == "SASL_SSL"
    assert kafka["sasl.mechanism"] == "SCRAM-SHA-256"
    assert kafka["ssl.ca.location"] == str(tls.ca)
    assert settings.registry_client_config()["ssl.ca.location"] == str(tls.ca)
