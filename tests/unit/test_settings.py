from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from pipeline.engine.app import broker_credentials
from pipeline.settings import Settings, SettingsError, default_cafile, read_env_file


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_defaults_suit_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.store == "rocksdb://"
    assert settings.partitions == 8
    assert settings.low_stock_threshold == 10
    assert settings.processing_guarantee == "at_least_once"
    assert settings.fetch_max_wait_ms == 50
    assert Settings.from_env({"PIPELINE_FETCH_MAX_WAIT_MS": "500"}).fetch_max_wait_ms == 500
    assert settings.row_cache_rows == 10_000
    assert Settings.from_env({"PIPELINE_ROW_CACHE_ROWS": "0"}).row_cache_rows == 0
    assert settings.max_batch_events == 2_000
    assert Settings.from_env({"PIPELINE_MAX_BATCH_EVENTS": "500"}).max_batch_events == 500
    assert settings.auto_register_schemas is False
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
    }


def test_environment_overrides_and_security_maps_to_librdkafka(ca_file: str) -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
            "PIPELINE_PARTITIONS": "4",
            "PIPELINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "PIPELINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PIPELINE_KAFKA_SASL_USERNAME": "svc",
            "PIPELINE_KAFKA_SASL_PASSWORD": "s3cret",
            "PIPELINE_KAFKA_SSL_CAFILE": ca_file,
            "PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH": "reg:pw",
            "PIPELINE_SCHEMA_REGISTRY_URL": "http://r:8081/",
        }
    )
    assert settings.partitions == 4
    assert settings.kafka_client_config() == {
        "bootstrap.servers": "b1:9092,b2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": ca_file,
        "ssl.endpoint.identification.algorithm": "https",
    }
    assert settings.registry_client_config() == {
        "url": "http://r:8081",
        "timeout": 10,
        "basic.auth.user.info": "reg:pw",
    }
    # Secrets never show in a repr (and so in a log line).
    assert "s3cret" not in repr(settings)
    assert "reg:pw" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("PIPELINE_PARTITIONS", "eight", "PIPELINE_PARTITIONS='eight' is not an integer"),
        ("PIPELINE_PARTITIONS", "0", "PIPELINE_PARTITIONS=0 is below the minimum 1"),
        ("PIPELINE_MAX_BATCH_EVENTS", "0", "PIPELINE_MAX_BATCH_EVENTS=0 is below the minimum 1"),
        ("PIPELINE_STATE_MEMORY_MB", "0", "PIPELINE_STATE_MEMORY_MB=0 is below the minimum 1"),
        ("PIPELINE_STATE_MEMORY_MB", "-5", "PIPELINE_STATE_MEMORY_MB=-5 is below the minimum 1"),
        ("PIPELINE_STATE_MEMORY_MB", "1GB", "PIPELINE_STATE_MEMORY_MB='1GB' is not an integer"),
        ("PIPELINE_AUTO_REGISTER_SCHEMAS", "maybe", "is not a boolean"),
        ("PIPELINE_PROCESSING_GUARANTEE", "twice", "PIPELINE_PROCESSING_GUARANTEE='twice'"),
        ("PIPELINE_STORE", "redis://", "must be rocksdb:// or memory://"),
        ("PIPELINE_KAFKA_SECURITY_PROTOCOL", "TLS", "is not one of"),
        ("PIPELINE_SCHEMA_REGISTRY_BASIC_AUTH", "nocolon", "must be user:password"),
    ],
)
def test_bad_values_are_named(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        Settings.from_env({name: value})


def test_closing_idle_window_partitions_is_off_by_default_and_read() -> None:
    assert Settings.from_env({}).window_idle_close_ms == 0
    idle = Settings.from_env({"PIPELINE_WINDOW_IDLE_CLOSE_MS": "30000"})
    assert idle.window_idle_close_ms == 30_000


def test_the_state_memory_budget_defaults_to_256_mib_and_is_read() -> None:
    assert Settings.from_env({}).state_memory_mb == 256
    assert Settings.from_env({"PIPELINE_STATE_MEMORY_MB": "1024"}).state_memory_mb == 1024


def test_env_file_lines_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "stack.env"
    path.write_text("# comment\n\nA=1\nB = two words \nnot a pair\n")
    assert read_env_file(path) == {"A": "1", "B": "two words"}
    assert read_env_file(tmp_path / "missing.env") == {}


def test_the_advertised_web_url_defaults_to_the_bind_address() -> None:
    assert Settings.from_env({"PIPELINE_WEB_PORT": "7000"}).web_url == "http://127.0.0.1:7000"
    in_container = Settings.from_env(
        {"PIPELINE_WEB_HOST": "0.0.0.0", "PIPELINE_WEB_ADVERTISED_URL": "http://worker-1:6066/"}
    )
    assert in_container.web_url == "http://worker-1:6066"


def test_web_body_limit_and_ingest_protection() -> None:
    defaults = Settings.from_env({})
    assert defaults.web_max_body_bytes == 64 * 1024
    assert defaults.ingest_enabled is True
    assert defaults.ingest_token is None
    guarded = Settings.from_env(
        {
            "PIPELINE_WEB_MAX_BODY_BYTES": "1024",
            "PIPELINE_INGEST_ENABLED": "false",
            "PIPELINE_INGEST_TOKEN": "t0ken-value",
        }
    )
    assert guarded.web_max_body_bytes == 1024
    assert guarded.ingest_enabled is False
    assert guarded.ingest_token == "t0ken-value"
    assert "t0ken-value" not in repr(guarded)
    with pytest.raises(SettingsError, match="PIPELINE_WEB_MAX_BODY_BYTES=0 is below"):
        Settings.from_env({"PIPELINE_WEB_MAX_BODY_BYTES": "0"})


def test_a_worker_id_makes_the_membership_static() -> None:
    assert Settings.from_env({}).worker_id is None
    assert Settings.from_env({"PIPELINE_WORKER_ID": "worker-1.eu_a"}).worker_id == "worker-1.eu_a"
    for bad in ("..", "worker 1", "w/1", "x" * 250):
        with pytest.raises(SettingsError, match="PIPELINE_WORKER_ID="):
            Settings.from_env({"PIPELINE_WORKER_ID": bad})


def test_every_client_trusts_the_same_ca_file_and_checks_the_hostname(ca_file: str) -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "PIPELINE_KAFKA_SASL_USERNAME": "svc",
            "PIPELINE_KAFKA_SASL_PASSWORD": "s3cret",
            "PIPELINE_KAFKA_SSL_CAFILE": ca_file,
            "PIPELINE_SCHEMA_REGISTRY_URL": "https://registry.example:443/apis/ccompat/v7",
            "PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE": ca_file,
        }
    )
    librdkafka = settings.kafka_client_config()
    assert librdkafka["ssl.ca.location"] == ca_file
    assert librdkafka["ssl.endpoint.identification.algorithm"] == "https"
    assert settings.registry_client_config()["ssl.ca.location"] == ca_file
    credentials = broker_credentials(settings.kafka_security)
    context = credentials.ssl_context  # type: ignore[union-attr]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED
    # The one CA of the file, and nothing of the system's.
    assert len(context.get_ca_certs()) == 1


def test_without_a_ca_file_every_client_trusts_the_same_default_bundle() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_KAFKA_SECURITY_PROTOCOL": "SSL",
            "PIPELINE_SCHEMA_REGISTRY_URL": "https://registry.example/apis/ccompat/v7",
        }
    )
    bundle = default_cafile()
    assert Path(bundle).is_file()
    assert settings.kafka_client_config()["ssl.ca.location"] == bundle
    assert settings.registry_client_config()["ssl.ca.location"] == bundle
    context = broker_credentials(settings.kafka_security)
    assert isinstance(context, ssl.SSLContext)
    assert len(context.get_ca_certs()) == len(
        ssl.create_default_context(cafile=bundle).get_ca_certs()
    )


def test_no_tls_settings_without_tls() -> None:
    settings = Settings.from_env({"PIPELINE_KAFKA_SSL_CAFILE": "/no/such/ca.pem"})
    assert settings.kafka_security.tls is None and settings.registry_tls is None
    assert "ssl.ca.location" not in settings.kafka_client_config()
    assert "ssl.ca.location" not in settings.registry_client_config()
    assert broker_credentials(settings.kafka_security) is None


@pytest.mark.parametrize(
    ("setting", "base"),
    [
        ("PIPELINE_KAFKA_SSL_CAFILE", {"PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}),
        (
            "PIPELINE_SCHEMA_REGISTRY_SSL_CAFILE",
            {"PIPELINE_SCHEMA_REGISTRY_URL": "https://r/apis/ccompat/v7"},
        ),
    ],
)
def test_a_missing_or_unreadable_ca_file_is_named(
    tmp_path: Path, setting: str, base: dict[str, str]
) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(SettingsError, match=f"{setting}={missing}: no such file"):
        Settings.from_env({**base, setting: str(missing)})
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match=f"{setting}={garbage} holds no PEM certificate"):
        Settings.from_env({**base, setting: str(garbage)})
    with pytest.raises(SettingsError, match=f"{setting}={tmp_path} is a directory"):
        Settings.from_env({**base, setting: str(tmp_path)})


def test_a_registry_url_must_be_http_or_https() -> None:
    with pytest.raises(SettingsError, match="PIPELINE_SCHEMA_REGISTRY_URL='r:8081'"):
        Settings.from_env({"PIPELINE_SCHEMA_REGISTRY_URL": "r:8081"})
