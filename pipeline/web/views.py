"""Table views: ``GET`` a key's row, answered by the worker that owns the key's partition,
and by the freshest copy this worker holds while the owner is away.

Faust's ``table_route`` is not used: it hashes the key through the table's key
serializer, drops request bodies and misroutes with several workers
(faust-streaming issues 187, 514). Here the key's partition is computed from the
raw key bytes with the producer's own murmur2 partitioner, the owner is looked
up in the assignor's changelog distribution, and the request is forwarded once
(a forwarded request is never forwarded again).

A view never lies. The owner answers from its table, unless it is still recovering
the partition. When the owner is away (killed, stopped, mid-rebalance, still
recovering), the worker asked answers from its own copy of the partition: a standby
replica, or the copy it still holds from an earlier assignment (pipeline.engine.copies),
saying how stale it is:

- ``X-Pipeline-Answered-By``: the worker that answered;
- ``X-Pipeline-Copy``: ``owner`` (the active partition) or ``copy`` (another copy);
- ``X-Pipeline-Copy-Lag``: changelog records the copy has not applied (0: current),
  absent when the broker could not say.

A 404 means the key has no entry: from the owner, or from a copy that is current. A
copy that lacks the key but may be behind answers 503 with ``Retry-After``, as does a
worker with no copy at all. Never 502.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from pipeline.kafka.offsets import EndOffsets
from pipeline.streaming.metrics import Metrics
from pipeline.web.http import error_response, key_problem

ROUTED_HEADER = "X-Pipeline-Routed-From"
ANSWERED_BY = "X-Pipeline-Answered-By"
COPY = "X-Pipeline-Copy"
COPY_LAG = "X-Pipeline-Copy-Lag"
# Passed on from the owner's answer to the client.
PASSED_ON = (ANSWERED_BY, COPY, COPY_LAG, "Retry-After")
# A dead owner refuses the connection at once; a stopped one is given this long.
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=3)
RETRY_AFTER_SECONDS = "1"

# What a view finds for a key in a copy of its partition: a row's bytes, a key's windows.
Found = TypeVar("Found")


class ServedTable(Protocol):
    """A table as its views need it: where each key's partition is served, and this
    worker's copies (pipeline.engine.web serves a Faust table so)."""

    @property
    def name(self) -> str: ...
    @property
    def changelog_topic(self) -> str: ...
    @property
    def own_url(self) -> str: ...
    @property
    def http_client(self) -> aiohttp.ClientSession: ...

    def partition_for(self, key: bytes) -> int:
        """The partition the producers place ``key`` on."""
        ...

    def owner_url(self, partition: int) -> str | None:
        """The URL of the worker that owns ``partition``; None while nobody does."""
        ...

    def settled(self) -> bool:
        """This worker's active partitions are caught up: no rebalance, no recovery."""
        ...

    def read(self, partition: int, key: bytes) -> bytes | None:
        """``key``'s value in this worker's copy of ``partition`` (active, standby or
        one it no longer holds); None without one."""
        ...

    def scan(self, partition: int, start: bytes, end: bytes) -> list[tuple[bytes, bytes]]:
        """The rows of this worker's copy of ``partition`` with keys in ``[start, end)``,
        in key order; none without a copy."""
        ...

    def copy_offset(self, partition: int) -> int | None:
        """The offset of the last changelog record this worker's copy holds; None
        without a copy or a record."""
        ...


def copy_lag(end: int | None, persisted: int | None) -> int | None:
    """Changelog records a copy has not applied: the partition's end offset against the
    offset of the last record the copy holds; None when the end is unknown."""
    if end is None or end < 0:  # librdkafka's OFFSET_INVALID: not known either
        return None
    return max(0, end - (persisted + 1 if persisted is not None else 0))


@dataclass
class TableQuery:
    """Answers GET requests for one table: through the key's owner, or from this worker's
    copy when the owner is away."""

    table: ServedTable
    metrics: Metrics
    end_offsets: EndOffsets

    @property
    def own_url(self) -> str:
        return self.table.own_url

    async def answer(
        self,
        request: web.Request,
        key: str,
        find: Callable[[int, bytes], Found | None],
        render: Callable[[Found], dict[str, Any]],
    ) -> web.Response:
        """``render`` of what ``find`` (the key's row, its windows) finds for ``key`` in the
        freshest copy of its partition that can be reached."""
        problem = key_problem(key)
        if problem is not None:
            return error_response(400, "malformed key", {"key": problem})
        raw_key = key.encode()
        partition = self.table.partition_for(raw_key)
        owner = self.table.owner_url(partition)
        if owner == self.own_url and self.table.settled():
            stored = find(partition, raw_key)
            if stored is None:
                return self.not_found(key, {ANSWERED_BY: self.own_url, COPY: "owner"})
            return web.json_response(
                render(stored), headers={ANSWERED_BY: self.own_url, COPY: "owner"}
            )
        if owner is not None and owner != self.own_url and ROUTED_HEADER not in request.headers:
            forwarded = await self.forward(request, owner)
            if forwarded is not None and forwarded.status != 503:
                return forwarded
        # The owner is away, unknown (rebalancing) or still recovering: our own copy.
        return await self.from_copy(key, raw_key, partition, find, render)

    async def from_copy(
        self,
        key: str,
        raw_key: bytes,
        partition: int,
        find: Callable[[int, bytes], Found | None],
        render: Callable[[Found], dict[str, Any]],
    ) -> web.Response:
        changelog = self.table.changelog_topic
        # The copy's offset before its row: the row read then is at least that recent, so
        # a key missing from a copy whose offset is current has no entry. (The other way
        # round, a restore running meanwhile could move the offset past a row the read had
        # not seen: a 404 for a key with an entry.)
        persisted = self.table.copy_offset(partition)
        stored = find(partition, raw_key)
        end = await asyncio.to_thread(self.end_offsets.end, changelog, partition)
        lag = copy_lag(end, persisted)
        headers = {ANSWERED_BY: self.own_url, COPY: "copy"}
        if lag is not None:
            headers[COPY_LAG] = str(lag)
        self.metrics.copy_answers.labels(self.table.name).inc()
        if stored is not None:
            return web.json_response(render(stored), headers=headers)
        if lag == 0:
            return self.not_found(key, headers)
        return error_response(
            503,
            f"{self.table.name} has no current copy of {key!r} here and its owner is away",
            {"copy_lag": lag},
            headers={**headers, "Retry-After": RETRY_AFTER_SECONDS},
        )

    def not_found(self, key: str, headers: Mapping[str, str]) -> web.Response:
        return error_response(404, f"{self.table.name} has no entry for {key!r}", headers=headers)

    async def forward(self, request: web.Request, owner: str) -> web.Response | None:
        """The owner's answer, or None when it did not answer (or this worker, stopping,
        can no longer ask: Faust closes its HTTP client before the web server)."""
        client = self.table.http_client
        if client.closed:
            return None
        self.metrics.routed_requests.labels(self.table.name).inc()
        target = owner + request.rel_url.path_qs
        try:
            async with client.get(
                target, headers={ROUTED_HEADER: self.own_url}, timeout=FORWARD_TIMEOUT
            ) as response:
                body = await response.read()
                passed_on = {
                    name: response.headers[name] for name in PASSED_ON if name in response.headers
                }
                return web.Response(
                    body=body,
                    status=response.status,
                    content_type="application/json",
                    headers=passed_on,
                )
        except (aiohttp.ClientError, TimeoutError):
            return None
