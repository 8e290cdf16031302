"""Fetching the servers from Maven Central with Maven, cached outside the repository.

Kafka is its ``kafka_2.13`` jar with its runtime dependencies plus a log4j2 backend; Apicurio
Registry is its ``tar.gz:all`` Quarkus distribution; Keycloak (the OIDC server of a stack whose
registry wants a login) is its ``keycloak-quarkus-dist`` tar.gz. A finished download leaves a
marker file, so a second start downloads nothing and a half-finished one is redone.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from pipeline.dev.stack import config

KAFKA_VERSION = "4.1.1"
APICURIO_VERSION = "3.3.3"
LOG4J_VERSION = "2.24.3"
KEYCLOAK_VERSION = "26.7.3"
# What a Keycloak folder in the cache is made with; a change makes a new folder.
KEYCLOAK_RECIPE = (*config.KEYCLOAK_BUILD_OPTIONS, "template-db-1")

_DONE = ".complete"


class DownloadError(RuntimeError):
    pass


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("PIPELINE_CACHE_DIR") or Path(base) / "shop-pipeline")


def kafka_pom(version: str = KAFKA_VERSION, log4j: str = LOG4J_VERSION) -> str:
    """A throwaway POM whose runtime classpath is a Kafka broker."""
    # Kafka 4.1 logs through slf4j 1.7, so the log4j2 binding is log4j-slf4j-impl (not -slf4j2-).
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shop-pipeline.dev.stack</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def _mvn(args: list[str], cwd: Path, attempts: int = 3) -> None:
    """Run Maven in ``cwd`` with a local repository of its own there, deleted with it: the
    cache is then only what we keep, under :func:`cache_dir`, and honours $HOME."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DownloadError("Maven (mvn) is not installed: apt-get install maven")
    command = [
        mvn,
        "-B",
        "-q",
        f"-Dmaven.repo.local={cwd / 'm2'}",
        # Retry flaky connections inside Maven too, not only around it.
        "-Dmaven.wagon.http.retryHandler.count=3",
        "-Dmaven.wagon.httpconnectionManager.ttlSeconds=120",
        *args,
    ]
    last = ""
    for attempt in range(1, attempts + 1):
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return
        last = (result.stdout + result.stderr)[-3000:]
        if attempt < attempts:
            time.sleep(5 * attempt)
    raise DownloadError(f"`{' '.join(command)}` failed {attempts} times:\n{last}")


def _fetch_once(target: Path, fill: Callable[[Path], None]) -> Path:
    """Fill ``target`` through a temporary sibling, so a broken download never looks finished."""
    if (target / _DONE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        fill(work)
        shutil.rmtree(work / "m2", ignore_errors=True)  # Maven's repository: not needed now
        (work / _DONE).write_text("ok\n")
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """A folder whose ``lib/`` holds the broker's classpath, downloaded on first use."""

    def fill(work: Path) -> None:
        (work / "pom.xml").write_text(kafka_pom(version))
        _mvn(
            [
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            cwd=work,
        )

    return _fetch_once(cache_dir() / f"kafka-{version}", fill)


def _unpack(artifact: str, work: Path, into: Path) -> str:
    """Download a tar.gz artifact from Maven Central and unpack it into ``into``;
    the archive's file name."""
    _mvn(
        ["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={work / 'download'}"],
        cwd=work,
    )
    (archive,) = (work / "download").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    shutil.rmtree(work / "download")
    return archive.name


def apicurio_home(version: str = APICURIO_VERSION) -> Path:
    """The unpacked Apicurio Registry (``quarkus-run.jar``), downloaded on first use."""

    def fill(work: Path) -> None:
        archive = _unpack(f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all", work, work)
        if not (work / "quarkus-run.jar").exists():
            raise DownloadError(f"{archive} has no quarkus-run.jar at its top")

    return _fetch_once(cache_dir() / f"apicurio-registry-{version}", fill)


def keycloak_home(java: str, version: str = KEYCLOAK_VERSION) -> Path:
    """The unpacked Keycloak distribution, downloaded and built on first use.

    Built means ``kc.sh build`` with :data:`config.KEYCLOAK_BUILD_OPTIONS` (about a minute):
    each stack then starts it ``--optimized``, which never rebuilds and so never writes to
    this shared folder (a start that had to rebuild would, and would take that minute again).
    Then Keycloak runs once, to leave an empty database (schema and master realm, no secret) in
    ``template/``: a stack starts on a copy of it, in half the time of creating its own.
    The folder's name carries a digest of this recipe, so changing it fetches anew.
    """

    def fill(work: Path) -> None:
        archive = _unpack(
            f"org.keycloak:keycloak-quarkus-dist:{version}:tar.gz", work, work / "unpacked"
        )
        # The archive holds one folder, keycloak-<version>/: its content is the home.
        (top,) = (work / "unpacked").iterdir()
        for entry in top.iterdir():
            entry.rename(work / entry.name)
        shutil.rmtree(work / "unpacked")
        if not (work / "lib" / "quarkus-run.jar").exists():
            raise DownloadError(f"{archive} has no lib/quarkus-run.jar")
        build = [
            java,
            *config.keycloak_jvm_args(home=work, dist=work, heap_mb=512),
            "build",
            *config.KEYCLOAK_BUILD_OPTIONS,
        ]
        built = subprocess.run(
            build, cwd=work, capture_output=True, text=True, timeout=900, check=False
        )
        if built.returncode != 0:
            raise DownloadError(
                f"building Keycloak failed (exit {built.returncode}):\n"
                f"{(built.stdout + built.stderr)[-3000:]}"
            )
        _make_keycloak_template(java, work)

    recipe = hashlib.sha256(" ".join(KEYCLOAK_RECIPE).encode()).hexdigest()[:8]
    return _fetch_once(cache_dir() / f"keycloak-{version}-{recipe}", fill)


def _make_keycloak_template(java: str, dist: Path, timeout: float = 600.0) -> None:
    """Start the built Keycloak once with no realm to import, wait for its master realm, stop
    it, and keep its database as ``dist/template/``."""
    home = dist / "template-home"
    (home / "data" / "import").mkdir(parents=True)
    (home / "lib").symlink_to(dist / "lib", target_is_directory=True)
    (port,) = config.free_ports(1)
    command = [
        java,
        *config.keycloak_jvm_args(home=home, dist=dist, heap_mb=384),
        *config.keycloak_server_args(port),
    ]
    log = home / "keycloak.log"
    master = f"http://{config.HOST}:{port}/realms/master/.well-known/openid-configuration"
    with log.open("wb") as out:
        server = subprocess.Popen(
            command, cwd=home, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(master):
            if server.poll() is not None or time.monotonic() > deadline:
                raise DownloadError(
                    f"Keycloak did not start to make its template database:\n"
                    f"{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.5)
        server.terminate()  # a clean stop closes the database
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    database = home / "data" / "h2" / config.KEYCLOAK_DATABASE_FILE
    # The JVM exits 143 (128 + SIGTERM) after a clean shutdown.
    if server.returncode not in (0, 143) or not database.is_file():
        raise DownloadError(
            f"Keycloak left no database (exit {server.returncode}):\n"
            f"{log.read_text(errors='replace')[-3000:]}"
        )
    (dist / "template").mkdir()
    shutil.copy2(database, dist / "template" / config.KEYCLOAK_DATABASE_FILE)
    shutil.rmtree(home)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
