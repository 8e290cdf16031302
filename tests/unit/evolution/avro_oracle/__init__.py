"""Apache Avro Java's ``SchemaCompatibility`` as an oracle for ``pipeline.evolution.avro_compat``.

The Java side is ``AvroCompatibilityOracle.java`` beside this file, compiled at test time against
the Avro jar and its runtime dependencies, which Maven fetches from Maven Central once into the
project's cache (the way the stack fetches Kafka). One JVM answers every pair of a test session
over stdin/stdout, so thousands of pairs take seconds.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from pipeline.dev.stack import artifacts
from pipeline.dev.stack.java import java_major_version

AVRO_VERSION = "1.12.1"
# Avro 1.12 is built for Java 11.
MIN_JDK = 11
ORACLE_SOURCE = Path(__file__).with_name("AvroCompatibilityOracle.java")


def avro_pom(version: str = AVRO_VERSION) -> str:
    """A throwaway POM whose runtime classpath is Avro (with Jackson and slf4j-api)."""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>shop-pipeline.tests</groupId>
  <artifactId>avro-runtime</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.avro</groupId><artifactId>avro</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def avro_classpath(version: str = AVRO_VERSION) -> list[Path]:
    """The jars of Avro's runtime classpath, downloaded on first use."""

    def fill(work: Path) -> None:
        (work / "pom.xml").write_text(avro_pom(version))
        artifacts._mvn(
            [
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={work / 'lib'}",
            ],
            cwd=work,
        )

    home = artifacts._fetch_once(artifacts.cache_dir() / f"avro-{version}", fill)
    return sorted((home / "lib").glob("*.jar"))


def find_jdk(minimum: int = MIN_JDK) -> tuple[str, str]:
    """(javac, java) of the first JDK at least ``minimum``; the stack's Java may be a bare JRE."""
    candidates = []
    for home in (os.environ.get("PIPELINE_JDK_HOME"), os.environ.get("JAVA_HOME")):
        if home:
            candidates.append(str(Path(home) / "bin" / "javac"))
    on_path = shutil.which("javac")
    if on_path:
        candidates.append(os.path.realpath(on_path))
    candidates.extend(sorted(glob.glob("/usr/lib/jvm/*/bin/javac"), reverse=True))
    for javac in candidates:
        java = str(Path(javac).with_name("java"))
        version = java_major_version(java) if Path(javac).is_file() else None
        if version is not None and version >= minimum:
            return javac, java
    raise RuntimeError(
        f"the Avro oracle needs a JDK {minimum}+ with javac (tried {candidates}): "
        "apt-get install default-jdk-headless, or set PIPELINE_JDK_HOME"
    )


class AvroOracle:
    """One JVM running Avro's checker; :meth:`verdicts` answers pairs in order.

    A verdict is ``COMPATIBLE``, ``INCOMPATIBLE``, ``INVALID <why>`` (a schema does not parse) or
    ``ERROR <why>`` (the checker threw).
    """

    def __init__(self, build_dir: Path) -> None:
        javac, java = find_jdk()
        classpath = os.pathsep.join(str(jar) for jar in avro_classpath())
        classes = build_dir / "classes"
        compiled = subprocess.run(
            [javac, "-nowarn", "-cp", classpath, "-d", str(classes), str(ORACLE_SOURCE)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if compiled.returncode != 0:
            raise RuntimeError(f"javac failed:\n{compiled.stdout}{compiled.stderr}")
        self._log_path = build_dir / "oracle.log"
        self._log = self._log_path.open("w")  # slf4j's "no provider" notice lands here
        self._process = subprocess.Popen(
            [java, "-cp", f"{classes}{os.pathsep}{classpath}", "AvroCompatibilityOracle"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            encoding="utf-8",
        )

    def verdicts(self, pairs: Sequence[tuple[Any, Any]]) -> list[str]:
        """Avro's verdict on each (reader, writer) pair."""
        stdin, stdout = self._pipes()
        # A writer thread, so a batch larger than the pipe's buffer cannot deadlock.
        feeder = threading.Thread(target=_send, args=(stdin, pairs))
        feeder.start()
        answers = [stdout.readline().rstrip("\n") for _ in pairs]
        feeder.join()
        if any(not answer for answer in answers):
            raise RuntimeError(f"the oracle stopped answering:\n{self._log_path.read_text()}")
        return answers

    def verdict(self, reader: Any, writer: Any) -> str:
        return self.verdicts([(reader, writer)])[0]

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        if self._process.stdin is None or self._process.stdout is None:
            raise RuntimeError("the oracle runs without pipes")
        return self._process.stdin, self._process.stdout


def _send(stdin: IO[str], pairs: Iterable[tuple[Any, Any]]) -> None:
    for reader, writer in pairs:
        stdin.write(json.dumps([reader, writer]) + "\n")
    stdin.flush()
