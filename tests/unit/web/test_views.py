from __future__ import annotations

import asyncio
from typing import Any, cast
from unittest.mock import Mock

from aiohttp import web

from pipeline.web.views import COPY_LAG, TableQuery, copy_lag


def test_copy_lag_counts_the_changelog_records_a_copy_has_not_applied() -> None:
    assert copy_lag(end=10, persisted=9) == 0  # holds offsets 0..9 of 10
    assert copy_lag(end=10, persisted=6) == 3
    assert copy_lag(end=10, persisted=None) == 10  # holds nothing yet
    assert copy_lag(end=0, persisted=None) == 0  # an empty changelog: nothing to miss
    assert copy_lag(end=None, persisted=6) is None  # the broker did not say
    assert copy_lag(end=-1001, persisted=6) is None  # nor did it here (OFFSET_INVALID)


class CopyOnly:
    """A table of which this worker holds a copy of the partition, its owner away."""

    name = "user_order_stats"
    changelog_topic = "stats-changelog"
    own_url = "http://worker-2:6066"

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.offset: int | None = None
        self.http_client = Mock()

    def partition_for(self, key: bytes) -> int:
        return 0

    def owner_url(self, partition: int) -> str | None:
        return None

    def settled(self) -> bool:
        return True

    def read(self, partition: int, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def scan(self, partition: int, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        return sorted((key, row) for key, row in self.rows.items() if start <= key < end)

    def copy_offset(self, partition: int) -> int | None:
        return self.offset


class RestoreWhileAsked:
    """End offsets of a changelog whose restore finishes while the view asks for its end."""

    def __init__(self, table: CopyOnly, key: bytes, end: int) -> None:
        self.table, self.key, self.last = table, key, end

    def end(self, topic: str, partition: int) -> int:
        self.table.rows[self.key] = b"row"
        self.table.offset = self.last - 1
        return self.last


def copy_answer(table: CopyOnly, end_offsets: object, key: str) -> web.Response:
    query = TableQuery(table, Mock(), cast(Any, end_offsets))
    return asyncio.run(
        query.from_copy(key, key.encode(), 0, table.read, lambda row: {"row": row.decode()})
    )


def test_a_current_copy_without_the_key_answers_404() -> None:
    table = CopyOnly()
    table.offset = 9
    answer = copy_answer(table, Mock(end=Mock(return_value=10)), "u1")
    assert answer.status == 404
    assert answer.headers[COPY_LAG] == "0"


def test_a_copy_restored_while_asked_is_not_taken_for_current() -> None:
    """The row was read before the restore wrote it: the copy's offset must be the one
    from before the read too, or a key with an entry would answer 404."""
    table = CopyOnly()
    answer = copy_answer(table, RestoreWhileAsked(table, b"u1", end=10), "u1")
    assert answer.status == 503
    assert answer.headers["Retry-After"]


def test_a_stopping_worker_does_not_forward_through_its_closed_client() -> None:
    """Faust closes the HTTP client before the web server stops: the request is answered
    from this worker's copy instead of failing with 500."""
    table = CopyOnly()
    table.http_client.closed = True
    query = TableQuery(table, Mock(), Mock())
    assert asyncio.run(query.forward(Mock(), "http://owner:6066")) is None
    table.http_client.get.assert_not_called()
