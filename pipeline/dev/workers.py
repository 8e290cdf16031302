"""Pipeline workers as separate processes, for the demo, the integration tests and the benchmarks.

A worker is ``faust -A pipeline.app worker`` with its own data dir and web port, started,
checked through its HTTP answers and stopped by its own pid. A :class:`Deployment` is one app id
and topic prefix, so several can share a broker without sharing topics, groups or tables.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pipeline.dev.stack.config import free_ports
from pipeline.dev.stack.launcher import tail
from pipeline.settings import Settings
from pipeline.topics import TopicNames

FAUST = str(Path(sys.executable).with_name("faust"))


T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], timeout: float = 180.0, interval: float = 0.5
) -> T:
    """Poll ``probe`` until it returns something other than None or False; TimeoutError after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class WorkerFailed(RuntimeError):
    """A worker exited or did not become healthy; the message ends with its log's last lines."""


def http_json(
    method: str, url: str, body: Any = None, raw: bytes | None = None, timeout: float = 30.0
) -> tuple[int, Any]:
    """(status, parsed JSON body, or None for an empty one) whatever the status."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    # urllib would declare a form body; POST endpoints refuse any declared type but JSON.
    headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    return status, json.loads(payload) if payload else None


SHOP_APP = "pipeline.app"
POINTS_APP = "pipeline.points_app"
ANALYTICS_APP = "pipeline.analytics_app"


@dataclass
class WorkerProcess:
    label: str
    env: Mapping[str, str]
    data_dir: Path
    port: int
    log: Path
    app: str = SHOP_APP  # the Faust app module (-A)
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.monotonic() at start

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise WorkerFailed(f"worker {self.label} was never started")
        return self.process.pid

    def start(self) -> WorkerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **self.env,
            # Absolute: the worker runs in the log's folder, where a relative path would move.
            "PIPELINE_DATA_DIR": str(self.data_dir.absolute()),
            "PIPELINE_WEB_PORT": str(self.port),
        }
        with self.log.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [FAUST, "-A", self.app, "worker", "-l", "info"],
                cwd=self.log.parent,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: a Ctrl-C meant for the caller does not kill it
                # mid-write; the caller stops it cleanly instead.
                start_new_session=True,
            )
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def failure(self, what: str) -> WorkerFailed:
        return WorkerFailed(
            f"worker {self.label} {what}; last lines of {self.log}:\n{tail(self.log)}"
        )

    def get(self, path: str) -> tuple[int, Any]:
        return http_json("GET", self.url + path)

    def health(self) -> dict[str, Any] | None:
        """The body of GET /health once it says ok (partitions held, tables recovered)."""
        if not self.running():
            raise self.failure("exited")
        try:
            status, body = self.get("/health")
        except (OSError, ValueError):
            return None
        ok = status == 200 and isinstance(body, dict) and body.get("status") == "ok"
        return body if ok else None

    def healthy(self) -> bool:
        return self.health() is not None

    def wait_healthy(self, timeout: float = 180.0) -> WorkerProcess:
        try:
            wait_for(f"{self.label} to be healthy", self.healthy, timeout, interval=0.3)
        except TimeoutError:
            raise self.failure(f"not healthy after {timeout:.0f} s") from None
        return self

    def samples(self) -> list[Sample]:
        """Every sample of GET /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=30) as response:
            text = response.read().decode()
        return [
            sample for family in text_string_to_metric_families(text) for sample in family.samples
        ]

    def metric(self, name: str, **labels: str) -> float:
        """One sample of GET /metrics (0 when absent)."""
        for sample in self.samples():
            if sample.name == name and sample.labels == labels:
                return sample.value
        return 0.0

    def replacement(self) -> WorkerProcess:
        """The same worker again, not started yet: same environment (worker id included),
        state dir, web port (so the URL the other workers route to stays right) and log."""
        return replace(self, process=None, started_at=0.0)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, so Faust commits offsets and closes its stores; SIGKILL after ``timeout``."""
        if self.process is None or not self.running():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: no commit, no clean close, as in a crash."""
        if self.process is not None and self.running():
            self.process.kill()
            self.process.wait(60)


@dataclass(frozen=True)
class Deployment:
    """One app id and topic prefix: its own topics, consumer group and table state."""

    name: str
    root: Path
    base_env: Mapping[str, str]
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {
            **self.base_env,
            "PIPELINE_APP_ID": self.name,
            "PIPELINE_TOPIC_PREFIX": f"{self.name}.",
            "PIPELINE_AUTO_REGISTER_SCHEMAS": "true",
            **self.extra_env,
        }

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    @property
    def names(self) -> TopicNames:
        return TopicNames.from_settings(self.settings)

    def worker(
        self,
        label: str,
        data_dir: Path | None = None,
        app: str = SHOP_APP,
        worker_id: str | None = None,
    ) -> WorkerProcess:
        """A worker of this deployment (of the shop pipeline, unless ``app`` names the
        points service's module); pass another worker's ``data_dir`` to restart on it, a
        ``worker_id`` for static group membership (PIPELINE_WORKER_ID)."""
        (port,) = free_ports(1)
        static = {"PIPELINE_WORKER_ID": worker_id} if worker_id is not None else {}
        return WorkerProcess(
            label=label,
            env={**self.env, **static},
            data_dir=data_dir or self.root / label,
            port=port,
            log=self.root / f"{label}.log",
            app=app,
        )
