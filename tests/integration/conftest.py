"""The real stack for integration tests, started once per session.

If `pipeline stack up` already runs one (as `.ci/run` and `./dev test` do), the tests use it;
otherwise the session starts its own in a temporary state dir and stops it at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.dev.stack.launcher import Stack, StackState
from pipeline.settings import Settings, default_stack_dir


@dataclass(frozen=True)
class StackInfo:
    bootstrap: str
    registry_url: str

    @property
    def env(self) -> dict[str, str]:
        """Environment for a subprocess (a worker, a CLI command) that uses this stack."""
        return {
            **os.environ,
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PIPELINE_SCHEMA_REGISTRY_URL": self.registry_url,
        }

    def settings(self, **overrides: object) -> Settings:
        base = Settings.from_env(self.env)
        return Settings(**{**base.__dict__, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    shared = Stack(default_stack_dir())
    state: StackState | None = shared.running()
    own: Stack | None = None
    if state is None:
        own = Stack(Path(tmp_path_factory.mktemp("stack")))
        state = own.up()
    try:
        yield StackInfo(bootstrap=state.bootstrap, registry_url=state.registry_url)
    finally:
        if own is not None:
            own.down()


@pytest.fixture
def unique() -> str:
    """A suffix that keeps topic and subject names of one test apart from every other's."""
    return uuid.uuid4().hex[:10]
