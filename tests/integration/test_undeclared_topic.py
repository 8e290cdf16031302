"""A rule that emits to a topic its agent does not declare is a bug in the rule, not in the
event: the worker exits with status 1, its log naming the agent and the topic, nothing is
dead-lettered and the event's offset is not committed, so the fixed service processes it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pipeline.dev.audit import read_topic
from pipeline.dev.loadgen import CONTRACT, LoadConfig, generate, send
from pipeline.dev.workers import Deployment, wait_for
from tests.integration.conftest import StackInfo

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_an_undeclared_topic_stops_the_worker_and_the_fixed_service_processes_the_event(
    stack: StackInfo, tmp_path: Path
) -> None:
    name = f"it-undeclared-{uuid.uuid4().hex[:8]}"
    deployed = Deployment(name, tmp_path, stack.env, {"PYTHONPATH": str(REPO)})
    # The order alone: the careless service creates no other topic (the broker does not).
    events = [
        event
        for event in generate(LoadConfig(users=1, orders=1, skus=1, restock_every=0))
        if event.stream == CONTRACT.order_created
    ]
    careless = deployed.worker("careless", app="tests.integration.apps.careless_app").start()
    try:
        careless.wait_healthy()
        assert send(events, deployed.settings, progress=False).failed == 0
        wait_for("the worker to stop", lambda: not careless.running(), timeout=120)
        assert careless.process is not None and careless.process.returncode == 1
        log = careless.log.read_text(errors="replace")
        assert "agent careless stopped the worker" in log
        assert f"emitted to {deployed.names.notifications!r}" in log
    finally:
        careless.stop()
    dead_letters = deployed.names.dead_letters(deployed.names.order_created)
    assert read_topic(deployed.settings, dead_letters) == []

    # The fixed service (here: the shop's) takes the event up from the committed offset.
    shop = deployed.worker("shop").start()
    try:
        shop.wait_healthy()
        (user,) = {event.key for event in events}
        wait_for(
            "the order processed",
            lambda: shop.get(f"/users/{user}/orders")[1].get("order_count") == 1,
        )
    finally:
        shop.stop()
