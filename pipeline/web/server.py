"""The worker's HTTP side, on Faust's aiohttp web server: the topology's table views
(pipeline.web.views), its ingest routes (pipeline.web.ingest), ``/health`` and
``/metrics``. Every error is JSON (pipeline.web.http).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web
from faust.types import AppT, TableT

from pipeline.admin.offsets import EndOffsets
from pipeline.serde.codec import Codecs
from pipeline.streaming.faust_internals import aiohttp_app
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.positions import TrackedCodec
from pipeline.streaming.producer import BatchProducer
from pipeline.streaming.topology import IngestRoute, Topology, View
from pipeline.web.http import Handler, json_errors
from pipeline.web.ingest import Ingest
from pipeline.web.views import TableQuery


def view_handler(query: TableQuery, view: View[Any]) -> Handler:
    codec = TrackedCodec(view.table.encode, view.table.decode)

    async def answer(request: web.Request) -> web.Response:
        key = request.match_info[view.parameter]
        return await query.answer(
            request, key, lambda stored: dict(view.render(key, codec.decode(stored).row))
        )

    return answer


def ingest_handler(ingest: Ingest, route: IngestRoute) -> Handler:
    async def produce(request: web.Request) -> web.Response:
        return await ingest.produce(request, route.topic, route.key_field)

    return produce


def register(
    app: AppT,
    topology: Topology,
    tables: Mapping[str, TableT[bytes, bytes]],
    codecs: Codecs,
    metrics: Metrics,
    producer: BatchProducer,
    end_offsets: EndOffsets,
) -> None:
    settings = topology.settings
    ingest = Ingest(
        producer,
        codecs,
        enabled=settings.ingest_enabled,
        token=settings.ingest_token,
        max_body_bytes=settings.web_max_body_bytes,
    )

    def assigned_partitions() -> int:
        return len(app.consumer.assignment())

    async def health(request: web.Request) -> web.Response:
        # Consuming means: the group assigned partitions (the web server starts
        # before the first assignment), no rebalance and no table recovery running.
        assigned = app.router.tables_metadata() if tables else app.consumer.assignment()
        if not assigned:
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

    web_app = aiohttp_app(app)
    web_app.middlewares.append(json_errors)
    router = web_app.router
    for view in topology.views:
        query = TableQuery(app, tables[view.table.name], settings.partitions, metrics, end_offsets)
        router.add_get(view.path, view_handler(query, view))
    router.add_get("/health", health)
    router.add_get("/metrics", metrics_view)
    for route in topology.ingest_routes:
        router.add_post(route.path, ingest_handler(ingest, route))
