"""Table views: ``GET`` a key's row, answered by the worker that owns the key's partition.

Faust's ``table_route`` is not used: it hashes the key through the table's key
serializer, drops request bodies and misroutes with several workers
(faust-streaming issues 187, 514). Here the key's partition is computed from the
raw key bytes with the producer's own murmur2 partitioner, the owner is looked
up in the assignor's changelog distribution, and the request is forwarded once
(a forwarded request is never forwarded again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka.partitioner import DefaultPartitioner
from faust.types import AppT, TableT

from pipeline.streaming.metrics import Metrics
from pipeline.web.http import error_response, key_problem

ROUTED_HEADER = "X-Pipeline-Routed-From"
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)

_partitioner = DefaultPartitioner()


def partition_for(key: bytes, partitions: int) -> int:
    """The partition aiokafka's producer (and any murmur2 producer) places ``key`` on."""
    every = list(range(partitions))
    return int(_partitioner(key, every, every))


@dataclass
class TableQuery:
    """Answers GET requests for one table, locally or through the key's owner."""

    app: AppT
    table: TableT[bytes, bytes]
    partitions: int
    metrics: Metrics

    def owner_url(self, key: bytes) -> str | None:
        partition = partition_for(key, self.partitions)
        changelog = self.table.changelog_topic.get_topic_name()
        for url, topics in self.app.router.table_metadata(self.table.name).items():
            if partition in topics.get(changelog, ()):
                return str(url)
        return None

    async def answer(
        self, request: web.Request, key: str, render: Callable[[bytes], dict[str, Any]]
    ) -> web.Response:
        problem = key_problem(key)
        if problem is not None:
            return error_response(400, "malformed key", {"key": problem})
        raw_key = key.encode()
        owner = self.owner_url(raw_key)
        own_url = str(self.app.conf.canonical_url)
        if owner is None:
            return error_response(503, "no worker owns this key right now (rebalancing)")
        if owner.rstrip("/") != own_url.rstrip("/"):
            if ROUTED_HEADER in request.headers:
                # The sender's view of the assignment differs from ours: a rebalance is
                # in progress. Forwarding again could loop.
                return error_response(503, "assignment is changing, retry shortly")
            return await self.forward(request, owner, own_url)
        stored = self.table.get(raw_key)
        if stored is None:
            return error_response(404, f"{self.table.name} has no entry for {key!r}")
        return web.json_response(render(stored))

    async def forward(self, request: web.Request, owner: str, own_url: str) -> web.Response:
        self.metrics.routed_requests.labels(self.table.name).inc()
        target = owner.rstrip("/") + request.rel_url.path_qs
        try:
            async with self.app.http_client.get(
                target, headers={ROUTED_HEADER: own_url}, timeout=FORWARD_TIMEOUT
            ) as response:
                body = await response.read()
                return web.Response(
                    body=body, status=response.status, content_type="application/json"
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return error_response(502, f"owner {owner} did not answer", {"reason": str(exc)})
