"""The web side of a Faust worker, as pipeline.web needs it: the aiohttp application of
Faust's web server, where our routes are added, the worker's state for /health, and each
table's partitions, owners and copies for its views (``pipeline.web.server.Worker``,
``pipeline.web.views.ServedTable``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import aiohttp
from aiohttp import web
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP, AppT, TableT

from pipeline.engine.store import copy_offset, has_partition, read_partition, scan_partition

_partitioner = DefaultPartitioner()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition aiokafka's producer (and any murmur2 producer) places ``key`` on."""
    every = list(range(partitions))
    return int(_partitioner(key, every, every))


def aiohttp_app(app: AppT) -> web.Application:
    """The aiohttp application of the app's web server (the only driver Faust ships)."""
    return cast(web.Application, app.web.web_app)  # type: ignore[attr-defined]


class FaustServedTable:
    """A Faust table as its views need it: who owns a partition, and this worker's copy."""

    def __init__(self, app: AppT, table: TableT[bytes, bytes], partitions: int) -> None:
        self.app = app
        self.table = table
        self.name = table.name
        self.changelog_topic = table.changelog_topic.get_topic_name()
        self.own_url = str(app.conf.canonical_url).rstrip("/")
        self.partitions = partitions

    def partition_for(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    def owner_url(self, partition: int) -> str | None:
        for url, topics in self.app.router.table_metadata(self.name).items():
            if partition in topics.get(self.changelog_topic, ()):
                return str(url).rstrip("/")
        return None

    def settled(self) -> bool:
        return not (self.app.rebalancing or self.app.in_recovery)

    def read(self, partition: int, key: bytes) -> bytes | None:
        return read_partition(self.table.data, partition, key)

    def scan(self, partition: int, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        store = self.table.data
        if not has_partition(store, partition):
            return []
        return list(scan_partition(store, partition, start, end))

    def copy_offset(self, partition: int) -> int | None:
        return copy_offset(self.table.data, TP(self.changelog_topic, partition))

    @property
    def http_client(self) -> aiohttp.ClientSession:
        return self.app.http_client


class FaustWorker:
    """A Faust worker as /health, /metrics and the views see it."""

    def __init__(
        self, app: AppT, tables: Mapping[str, TableT[bytes, bytes]], partitions: int
    ) -> None:
        self.app = app
        self.tables = tables
        self.partitions = partitions
        self.web_app = aiohttp_app(app)

    def assigned_partitions(self) -> int:
        return len(self.app.consumer.assignment())

    def status(self) -> str:
        """``ok`` while consuming: the group assigned partitions (the web server starts
        before the first assignment), no rebalance and no table recovery running."""
        app = self.app
        assigned = app.router.tables_metadata() if self.tables else app.consumer.assignment()
        if not assigned:
            return "waiting for assignment"
        if app.rebalancing or app.in_recovery:
            return "rebalancing"
        return "ok"

    def served_table(self, name: str) -> FaustServedTable:
        return FaustServedTable(self.app, self.tables[name], self.partitions)
