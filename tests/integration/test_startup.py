"""Start-up against the real broker: topics created, bad layouts refused."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from pipeline.cli import main
from pipeline.dev.workers import wait_for
from pipeline.kafka.topics import admin_client, ensure_topics, existing_partition_counts
from pipeline.services import shop
from tests.integration.conftest import StackInfo
from tests.integration.harness import deployment

pytestmark = pytest.mark.integration


def test_missing_topics_are_created_with_the_configured_counts(stack: StackInfo) -> None:
    name = f"it-topics-{uuid.uuid4().hex[:8]}"
    settings = stack.settings(app_id=name, topic_prefix=f"{name}.", partitions=3)
    created = ensure_topics(settings, shop(settings).specs())
    assert f"{name}.order_created" in created and f"{name}-stock-changelog" in created
    counts = existing_partition_counts(admin_client(settings))
    assert {counts[topic] for topic in created} == {3}
    assert ensure_topics(settings, shop(settings).specs()) == []  # idempotent

    env = {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
        "PIPELINE_APP_ID": name,
        "PIPELINE_TOPIC_PREFIX": f"{name}.",
        "PIPELINE_PARTITIONS": "3",
    }
    # The CLI creates what every service needs: the points service's topics are left.
    creating = CliRunner().invoke(main, ["topics", "create"], env=env)
    assert creating.exit_code == 0, creating.output
    assert f"created {name}-points-points-changelog" in creating.output
    assert f"created {name}.user_points" in creating.output

    def listed() -> str | None:
        # A topic created a moment ago may not be in the broker's metadata yet.
        listing = CliRunner().invoke(main, ["topics", "list"], env=env)
        assert listing.exit_code == 0, listing.output
        return None if "missing" in listing.output else listing.output

    assert f"{name}.order_created" in wait_for("every topic listed", listed, timeout=30)


def test_worker_refuses_to_start_when_copartitioning_is_broken(
    stack: StackInfo, tmp_path: Path
) -> None:
    name = f"it-layout-{uuid.uuid4().hex[:8]}"
    shop = deployment(stack, name, tmp_path)
    admin = admin_client(shop.settings)
    wrong = NewTopic(f"{name}.stock_adjusted", num_partitions=3, replication_factor=1)
    for future in admin.create_topics([wrong]).values():
        future.result()
    worker = shop.worker("refused").start()
    assert worker.process is not None
    assert worker.process.wait(120) != 0
    log = worker.log.read_text()
    assert "TopicLayoutError" in log
    assert f"{name}.stock_adjusted=3" in log
