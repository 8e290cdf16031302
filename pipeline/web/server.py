"""The worker's HTTP answers (see CONTRACT.md), on Faust's aiohttp web server.

Table queries are answered by the worker that owns the key's partition. Faust's
``table_route`` is not used: it hashes the key through the table's key
serializer, drops request bodies and misroutes with several workers
(faust-streaming issues 187, 514). Here the key's partition is computed from the
raw key bytes with the producer's own murmur2 partitioner, the owner is looked
up in the assignor's changelog distribution, and the request is forwarded once
(a forwarded request is never forwarded again).

POSTs need no routing: any worker can produce. They can be switched off
(``PIPELINE_INGEST_ENABLED=false``: 403) or need a bearer token
(``PIPELINE_INGEST_TOKEN``: 401 without it); views stay open. A POST body is read
up to ``PIPELINE_WEB_MAX_BODY_BYTES`` (413 beyond), must be JSON (415 for another
declared content type) and a record of the topic's schema with no unknown fields
(400). Every error is JSON.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiokafka.partitioner import DefaultPartitioner
from faust.types import AppT, TableT

from pipeline.domain.encoding import decode_stock_row, decode_user_stats
from pipeline.serde.codec import Codecs
from pipeline.serde.errors import PipelineCodecError, RecordValidationError
from pipeline.settings import Settings
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.tables import Tables
from pipeline.topics import TopicNames

log = logging.getLogger(__name__)

ROUTED_HEADER = "X-Pipeline-Routed-From"
MAX_KEY_LENGTH = 256
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, error: str, details: Any = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    body: dict[str, Any] = {"error": error}
    if details is not None:
        body["details"] = details
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Unknown paths, wrong methods and unexpected failures answer JSON, never a trace."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # A 405 must say which methods the path allows.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, exc.reason, headers=allow)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error")


def key_problem(key: str) -> str | None:
    if not key.strip():
        return "must not be blank"
    if len(key.encode()) > MAX_KEY_LENGTH:
        return f"longer than {MAX_KEY_LENGTH} bytes"
    if any(not char.isprintable() for char in key):
        return "contains control characters"
    return None


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


def is_json_content_type(request: web.Request) -> bool:
    """JSON, or no declared type at all (aiohttp reports a missing one as octet-stream)."""
    if hdrs.CONTENT_TYPE not in request.headers:
        return True
    declared = request.content_type
    return declared == "application/json" or (
        declared.startswith("application/") and declared.endswith("+json")
    )


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The whole body, or None as soon as it exceeds ``limit`` bytes (chunked ones too)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Ingest:
    """POST endpoints: validate the JSON body against the topic's schema, produce, wait
    for the broker's acknowledgement."""

    app: AppT
    codecs: Codecs
    enabled: bool
    token: str | None
    max_body_bytes: int

    def authorized(self, request: web.Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        # Constant time: how long a refusal takes says nothing about how much of a guess
        # was right. surrogatepass: any header text encodes, distinct texts stay distinct.
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogatepass"), self.token.encode()
        )

    async def produce(self, request: web.Request, topic: str, key_field: str) -> web.Response:
        if not self.enabled:
            return error_response(403, "ingest is disabled on this worker")
        if not self.authorized(request):
            # The token is never echoed, not even the one that was sent.
            return error_response(
                401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not is_json_content_type(request):
            return error_response(
                415, "body must be JSON", {"content_type": "expected application/json"}
            )
        raw = await read_body(request, self.max_body_bytes)
        if raw is None:
            return error_response(413, "body too large", {"limit_bytes": self.max_body_bytes})
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            # ValueError covers bad JSON, bad UTF-8 and integers too long to convert;
            # RecursionError, nesting too deep for the parser.
            return error_response(400, "body is not JSON", {"body": str(exc)[:200]})
        if not isinstance(body, Mapping):
            return error_response(400, "body must be a JSON object", {"body": type(body).__name__})
        codec = self.codecs[topic]
        try:
            codec.validate(body)  # also refuses unknown fields, which encoding would drop
            value = codec.encode(body)
        except RecordValidationError as exc:
            return error_response(400, f"invalid {exc.record_name}", exc.problems)
        except PipelineCodecError as exc:
            return error_response(503, "cannot encode right now", {"reason": exc.reason})
        problem = key_problem(str(body[key_field]))
        if problem is not None:
            return error_response(400, "malformed key", {key_field: problem})
        key = str(body[key_field]).encode()
        metadata = await self.app.producer.send_and_wait(
            topic, key, value, partition=None, timestamp=None, headers=None
        )
        return web.json_response(
            {"topic": metadata.topic, "partition": metadata.partition, "offset": metadata.offset},
            status=202,
        )


def render_stock(sku: str) -> Callable[[bytes], dict[str, Any]]:
    def render(stored: bytes) -> dict[str, Any]:
        return {"sku": sku, "available": decode_stock_row(stored).available}

    return render


def render_user_stats(user_id: str) -> Callable[[bytes], dict[str, Any]]:
    def render(stored: bytes) -> dict[str, Any]:
        stats = decode_user_stats(stored)
        return {
            "user_id": user_id,
            "order_count": stats.order_count,
            "total_spent_cents": stats.total_spent_cents,
            "last_order_id": stats.last_order_id,
        }

    return render


def register(
    app: AppT,
    *,
    tables: Tables,
    names: TopicNames,
    codecs: Codecs,
    metrics: Metrics,
    partitions: int,
    settings: Settings,
) -> None:
    stock = TableQuery(app, tables.stock, partitions, metrics)
    user_stats = TableQuery(app, tables.user_stats, partitions, metrics)
    ingest = Ingest(
        app,
        codecs,
        enabled=settings.ingest_enabled,
        token=settings.ingest_token,
        max_body_bytes=settings.web_max_body_bytes,
    )

    async def get_stock(request: web.Request) -> web.Response:
        sku = request.match_info["sku"]
        return await stock.answer(request, sku, render_stock(sku))

    async def get_user_orders(request: web.Request) -> web.Response:
        user_id = request.match_info["user_id"]
        return await user_stats.answer(request, user_id, render_user_stats(user_id))

    def assigned_partitions() -> int:
        return len(app.consumer.assignment())

    async def health(request: web.Request) -> web.Response:
        # Consuming means: the group assigned partitions (the web server starts
        # before the first assignment), no rebalance and no table recovery running.
        if not app.router.tables_metadata():
            return web.json_response({"status": "waiting for assignment"}, status=503)
        if app.rebalancing or app.in_recovery:
            return web.json_response({"status": "rebalancing"}, status=503)
        return web.json_response({"status": "ok", "assigned_partitions": assigned_partitions()})

    async def metrics_view(request: web.Request) -> web.Response:
        metrics.assigned_partitions.set(assigned_partitions())
        body, content_type = metrics.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    async def post_user(request: web.Request) -> web.Response:
        return await ingest.produce(request, names.user_registered, "user_id")

    async def post_order(request: web.Request) -> web.Response:
        return await ingest.produce(request, names.order_created, "user_id")

    async def post_stock(request: web.Request) -> web.Response:
        return await ingest.produce(request, names.stock_adjusted, "sku")

    # The aiohttp driver (the only one Faust ships) exposes its Application.
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]
    web_app.middlewares.append(json_errors)
    router = web_app.router
    router.add_get("/stock/{sku}", get_stock)
    router.add_get("/users/{user_id}/orders", get_user_orders)
    router.add_get("/health", health)
    router.add_get("/metrics", metrics_view)
    router.add_post("/users", post_user)
    router.add_post("/orders", post_order)
    router.add_post("/stock", post_stock)
