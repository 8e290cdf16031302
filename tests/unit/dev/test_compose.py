"""docker-compose.yml stays in step with the local stack launcher, the settings and the
monitoring configuration in ops/ (parsed: no Docker engine runs the file here)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.dev.stack import artifacts, config
from pipeline.settings import Settings
from pipeline.streaming.metrics import Metrics

COMPOSE = Path(__file__).resolve().parents[3] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_images_are_the_versions_the_launcher_runs() -> None:
    services = _services()
    assert services["kafka"]["image"] == f"apache/kafka:{artifacts.KAFKA_VERSION}"
    assert services["registry"]["image"] == (
        f"apicurio/apicurio-registry:{artifacts.APICURIO_VERSION}"
    )
    assert services["registry"]["environment"]["APICURIO_RULES_GLOBAL_COMPATIBILITY"] == "BACKWARD"


def test_workers_settings_parse_and_point_at_the_compose_services() -> None:
    services = _services()
    workers = [name for name in services if name.startswith("worker")]
    assert len(workers) == 2
    for name in workers:
        service = services[name]
        assert service["command"] == ["faust", "-A", "pipeline.app", "worker", "-l", "info"]
        settings = Settings.from_env(service["environment"])
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.schema_registry_url == "http://registry:8080/apis/ccompat/v7"
        assert settings.web_host == "0.0.0.0"
        assert str(settings.data_dir) == "/data"
        # Bound to 0.0.0.0, so other workers need the service's own name to route queries.
        assert settings.web_url == f"http://{name}:6066"
        assert any(volume.endswith(":/data") for volume in service["volumes"])
        assert "healthcheck" in service


def test_each_worker_is_a_static_member_with_an_id_of_its_own() -> None:
    services = _services()
    workers = [name for name in services if name.startswith("worker")]
    ids = [Settings.from_env(services[name]["environment"]).worker_id for name in workers]
    assert ids == workers


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts of files in the checkout: container path -> host path."""
    mounts = {}
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = COMPOSE.parent / source
    return mounts


def test_prometheus_scrapes_every_worker_service() -> None:
    services = _services()
    config_file = _mounts(services["prometheus"])["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load(config_file.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job["static_configs"]
        for target in static["targets"]
    }
    workers = {
        f"{name}:{Settings.from_env(service['environment']).web_port}"
        for name, service in services.items()
        if name.startswith("worker")
    }
    assert targets == workers


def _exposed_names() -> set[str]:
    """Every sample name a worker's /metrics can have."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def test_grafana_provisions_prometheus_and_a_dashboard_of_metrics_that_exist() -> None:
    services = _services()
    mounts = _mounts(services["grafana"])
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    assert services["prometheus"]["ports"] == ["127.0.0.1:9090:9090"]
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "pipeline.yml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    (dashboard_file,) = dashboards.glob("*.json")
    panels = json.loads(dashboard_file.read_text())["panels"]
    exposed = _exposed_names()
    for panel in panels:
        assert panel["datasource"]["uid"] == datasource["uid"]
        for target in panel["targets"]:
            used = set(re.findall(r"\bpipeline_[a-z_]+", target["expr"]))
            assert used <= exposed, f"{panel['title']}: no such metric {used - exposed}"


def test_the_broker_keeps_records_by_size_as_the_launcher_s_does() -> None:
    """Records carry old event times as their Kafka timestamps: no time-based retention."""
    environment = _services()["kafka"]["environment"]
    assert environment["KAFKA_LOG_RETENTION_MS"] == "-1"
    assert environment["KAFKA_LOG_RETENTION_BYTES"] == str(config.LOG_RETENTION_BYTES)
