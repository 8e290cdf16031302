"""The real stack for integration tests, started once per session.

If `pipeline stack up` already runs one (as `.ci/run` and `./dev test` do), the tests use it;
otherwise the session starts its own in a temporary state dir and stops it at the end.

The TLS tests have a stack of their own (`tls_stack`): SASL_SSL, an HTTPS registry with
basic auth, certificates of a CA made at its start. One already up at PIPELINE_TLS_STACK_DIR
(`pipeline stack up --tls --registry-auth --state-dir ...`) is used and left running.
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


@pytest.fixture(scope="session")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack whose broker listens for clients on SASL_SSL only (SCRAM or PLAIN) and whose
    registry serves HTTPS only and wants a login; stopped, by its pids, at the end."""
    given = os.environ.get("PIPELINE_TLS_STACK_DIR")
    if given and Stack(Path(given)).running() is not None:
        yield Stack(Path(given))
        return
    own = Stack(Path(tmp_path_factory.mktemp("tls-stack")))
    # Keycloak creates its database at each start: a minute or more on 2 busy cores.
    own.up(tls=True, registry_auth=True, timeout=300)
    try:
        yield own
    finally:
        own.down()
