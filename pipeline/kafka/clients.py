"""librdkafka's log lines through Python logging, for the clients the admin and dev tools make.

Left alone, librdkafka writes its log lines straight to stderr, past Python logging: in the
middle of the load generator's progress bar, for one (on a fresh stack, ``GETPID ... Coordinator
load in progress: retrying``). With this, they are records of the ``pipeline.librdkafka`` logger,
served by the client's ``poll`` and handled like any other log record.

One line is dropped: an idempotent producer's ``GETPID`` retries while the broker's
transaction coordinator is still loading (every fresh stack, for a second or two).
librdkafka retries by itself and nobody can act on it; a retry that keeps failing ends
in a delivery error, which is reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

LIBRDKAFKA_LOGGER = logging.getLogger("pipeline.librdkafka")
TRANSIENT = ("Coordinator load in progress: retrying",)


class DropTransientRetries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(transient in message for transient in TRANSIENT)


LIBRDKAFKA_LOGGER.addFilter(DropTransientRetries())


def logging_to_python(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a confluent-kafka client whose librdkafka logs go to LIBRDKAFKA_LOGGER."""
    return {**config, "logger": LIBRDKAFKA_LOGGER}
