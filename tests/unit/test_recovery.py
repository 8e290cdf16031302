from __future__ import annotations

import asyncio
import hashlib
import inspect
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock, Mock

import faust
from faust.tables.recovery import Recovery
from faust.types import TP

from pipeline.app import create_app
from pipeline.recovery import FAUST_VERSION, PipelineRecovery
from pipeline.settings import Settings

# Faust's Recovery.on_recovery_completed as pipeline.recovery reorders it; a Faust upgrade
# that changes it fails here, so the override is checked against the new one.
UPSTREAM_SHA256 = "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"


def test_the_app_recovers_with_pipeline_recovery() -> None:
    app = create_app(Settings(app_id="unit", topic_prefix="unit."))
    assert isinstance(app.tables.recovery, PipelineRecovery)


def test_the_override_matches_the_installed_faust() -> None:
    assert faust.__version__ == FAUST_VERSION, (
        f"faust-streaming {faust.__version__} is installed; pipeline.recovery replaces "
        f"Recovery.on_recovery_completed of {FAUST_VERSION}: compare it with the new one"
    )
    source = inspect.getsource(Recovery.on_recovery_completed)
    assert hashlib.sha256(source.encode()).hexdigest() == UPSTREAM_SHA256, (
        "Faust's Recovery.on_recovery_completed changed: compare it with pipeline.recovery"
    )


def test_streams_resume_only_after_the_seek_and_the_queues_emptied() -> None:
    """Faust resumes the streams, seeks (agents already get events), then empties the
    agents' queues, dropping events it never fetches again. The streams must stay
    paused until the seek is done and the queues are emptied."""
    calls: list[Any] = []
    stream, changelog = TP("orders", 0), TP("unit-stats-changelog", 0)
    consumer = Mock()
    consumer.assignment.return_value = {stream, changelog}

    async def perform_seek() -> None:
        calls.append("perform_seek")

    consumer.perform_seek = perform_seek
    consumer.resume_partitions.side_effect = lambda tps: calls.append(("resume", set(tps)))
    consumer.resume_flow.side_effect = lambda: calls.append("resume_flow")
    app = Mock(consumer=consumer, consumer_generation_id=3)
    app.on_rebalance_complete.send = AsyncMock()
    app.flow_control.resume.side_effect = lambda: calls.append("empty queues")
    app._fetcher.maybe_start = AsyncMock()
    app.assignor.assigned_standbys.return_value = set()

    async def wait(coro: Any, timeout: float | None = None) -> None:
        await coro

    recovery = SimpleNamespace(
        app=app,
        log=Mock(),
        tables=Mock(values=Mock(return_value=[])),
        actives_for_table={},
        standbys_for_table={},
        completed=asyncio.Event(),
        _set_recovery_ended=Mock(),
        _wait=wait,
        _is_changelog_tp=lambda tp: tp.topic.endswith("-changelog"),
    )
    asyncio.run(PipelineRecovery.on_recovery_completed(recovery, 3))  # type: ignore[arg-type]

    assert calls == ["perform_seek", "empty queues", ("resume", {stream}), "resume_flow"]
    assert recovery.completed.is_set()
    app.on_rebalance_end.assert_called_once_with()
