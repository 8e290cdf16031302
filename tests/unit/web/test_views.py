from __future__ import annotations

import asyncio
from typing import Any, cast
from unittest.mock import Mock

from aiohttp import web
from faust.types import TP

from pipeline.web.views import COPY_LAG, TableQuery, copy_lag


def test_copy_lag_counts_the_changelog_records_a_copy_has_not_applied() -> None:
    assert copy_lag(end=10, persisted=9) == 0  # holds offsets 0..9 of 10
    assert copy_lag(end=10, persisted=6) == 3
    assert copy_lag(end=10, persisted=None) == 10  # holds nothing yet
    assert copy_lag(end=0, persisted=None) == 0  # an empty changelog: nothing to miss
    assert copy_lag(end=None, persisted=6) is None  # the broker did not say
    assert copy_lag(end=-1001, persisted=6) is None  # nor did it here (OFFSET_INVALID)


class MemoryStore:
    """A store of the shape of Faust's memory store: one dict for every partition."""

    def __init__(self) -> None:
        self.rows: dict[bytes, bytes] = {}
        self.offset: int | None = None

    def get(self, key: bytes) -> bytes | None:
        return self.rows.get(key)

    def persisted_offset(self, tp: TP) -> int | None:
        return self.offset


class RestoreWhileAsked:
    """End offsets of a changelog whose restore finishes while the view asks for its end."""

    def __init__(self, store: MemoryStore, key: bytes, end: int) -> None:
        self.store, self.key, self.last = store, key, end

    def end(self, topic: str, partition: int) -> int:
        self.store.rows[self.key] = b"row"
        self.store.offset = self.last - 1
        return self.last


def copy_answer(store: MemoryStore, end_offsets: object, key: str) -> web.Response:
    table = Mock(data=store)
    table.name = "user_order_stats"
    table.changelog_topic.get_topic_name.return_value = "stats-changelog"
    query = TableQuery(Mock(), table, 8, Mock(), cast(Any, end_offsets))
    return asyncio.run(query.from_copy(key, key.encode(), 0, lambda row: {"row": row.decode()}))


def test_a_current_copy_without_the_key_answers_404() -> None:
    store = MemoryStore()
    store.offset = 9
    answer = copy_answer(store, Mock(end=Mock(return_value=10)), "u1")
    assert answer.status == 404
    assert answer.headers[COPY_LAG] == "0"


def test_a_copy_restored_while_asked_is_not_taken_for_current() -> None:
    """The row was read before the restore wrote it: the copy's offset must be the one
    from before the read too, or a key with an entry would answer 404."""
    store = MemoryStore()
    answer = copy_answer(store, RestoreWhileAsked(store, b"u1", end=10), "u1")
    assert answer.status == 503
    assert answer.headers["Retry-After"]


def test_a_stopping_worker_does_not_forward_through_its_closed_client() -> None:
    """Faust closes the HTTP client before the web server stops: the request is answered
    from this worker's copy instead of failing with 500."""
    app = Mock()
    app.http_client.closed = True
    query = TableQuery(app, Mock(), 8, Mock(), Mock())
    assert asyncio.run(query.forward(Mock(), "http://owner:6066")) is None
    app.http_client.get.assert_not_called()
