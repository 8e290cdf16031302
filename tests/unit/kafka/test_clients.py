from __future__ import annotations

import logging

import pytest

from pipeline.kafka.clients import LIBRDKAFKA_LOGGER, logging_to_python


def test_librdkafka_logs_go_to_python_logging() -> None:
    assert logging_to_python({"bootstrap.servers": "x"}) == {
        "bootstrap.servers": "x",
        "logger": LIBRDKAFKA_LOGGER,
    }


def test_the_coordinator_loading_retry_is_dropped_and_other_warnings_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=LIBRDKAFKA_LOGGER.name):
        LIBRDKAFKA_LOGGER.warning(
            "GETPID [rdkafka#producer-1] [thrd:main]: Failed to acquire idempotence PID from "
            "broker 127.0.0.1:1/1: Broker: Coordinator load in progress: retrying"
        )
        LIBRDKAFKA_LOGGER.warning("FAIL [rdkafka#producer-1]: 127.0.0.1:1/1: Connect failed")
    assert [record.getMessage() for record in caplog.records] == [
        "FAIL [rdkafka#producer-1]: 127.0.0.1:1/1: Connect failed"
    ]
