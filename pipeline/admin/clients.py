"""librdkafka's log lines through Python logging, for the clients the admin and dev tools make.

Left alone, librdkafka writes its log lines straight to stderr, past Python logging: in the
middle of the load generator's progress bar, for one (on a fresh stack, ``GETPID ... Coordinator
load in progress: retrying``). With this, they are records of the ``pipeline.librdkafka`` logger,
served by the client's ``poll`` and handled like any other log record.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

LIBRDKAFKA_LOGGER = logging.getLogger("pipeline.librdkafka")


def logging_to_python(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` for a confluent-kafka client whose librdkafka logs go to LIBRDKAFKA_LOGGER."""
    return {**config, "logger": LIBRDKAFKA_LOGGER}
