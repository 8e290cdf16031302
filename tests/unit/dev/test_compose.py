"""docker-compose.yml stays in step with the local stack launcher and the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pipeline.dev.stack import artifacts
from pipeline.settings import Settings

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
