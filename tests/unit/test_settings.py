from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.settings import Settings, SettingsError, read_env_file


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


def test_environment_overrides_and_security_maps_to_librdkafka() -> None:
    settings = Settings.from_env(
        {
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
            "PIPELINE_PARTITIONS": "4",
            "PIPELINE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "PIPELINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "PIPELINE_KAFKA_SASL_USERNAME": "svc",
            "PIPELINE_KAFKA_SASL_PASSWORD": "s3cret",
            "PIPELINE_KAFKA_SSL_CAFILE": "/etc/ca.pem",
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
        "ssl.ca.location": "/etc/ca.pem",
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
