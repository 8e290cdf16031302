"""The Quix Streams peer's own virtualenv, created on first use.

quixstreams 3.28.1 requires confluent-kafka <2.13 and the project pins 2.16, so the peer
cannot share the project's venv: it runs from bench/.venv-quix (gitignored).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import BENCH_DIR

QUIXSTREAMS = "quixstreams[avro]==3.28.1"
VENV = BENCH_DIR / ".venv-quix"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure() -> Path:
    """The peer venv's python, creating the venv and installing Quix Streams if needed."""
    interpreter = python()
    if interpreter.exists():
        probe = subprocess.run(
            [str(interpreter), "-c", "import quixstreams"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return interpreter
    print(f"creating {VENV} with {QUIXSTREAMS} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(interpreter), "-m", "pip", "install", "--quiet", QUIXSTREAMS], check=True)
    return interpreter
