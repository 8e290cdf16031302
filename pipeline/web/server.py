"""The worker's HTTP side, on Faust's aiohttp web server: the topology's table views
(pipeline.web.views), its ingest routes (pipeline.web.ingest), ``/health`` and
``/metrics``. Every error is JSON (pipeline.web.http).
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from pipeline.kafka.offsets import EndOffsets
from pipeline.serde.codec import Codecs
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.positions import TrackedCodec
from pipeline.streaming.producer import BatchProducer
from pipeline.streaming.topology import IngestRoute, Topology, View
from pipeline.web.http import Handler, json_errors
from pipeline.web.ingest import Ingest
from pipeline.web.views import ServedTable, TableQuery
from pipeline.web.window_views import window_view_handler


class Worker(Protocol):
    """The worker whose HTTP side this is (pipeline.engine.web serves a Faust worker so)."""

    @property
    def web_app(self) -> web.Application:
        """The application of the worker's web server, where the routes are added."""
        ...

    def assigned_partitions(self) -> int: ...

    def status(self) -> str:
        """``ok`` while consuming, else what it waits for."""
        ...

    def served_table(self, name: str) -> ServedTable: ...


def view_handler(query: TableQuery, view: View[Any]) -> Handler:
    codec = TrackedCodec(view.table.encode, view.table.decode)

    async def answer(request: web.Request) -> web.Response:
        key = request.match_info[view.parameter]
        return await query.answer(
            request,
            key,
            query.table.read,
            lambda stored: dict(view.render(key, codec.decode(stored).row)),
        )

    return answer


def ingest_handler(ingest: Ingest, route: IngestRoute) -> Handler:
    async def produce(request: web.Request) -> web.Response:
        return await ingest.produce(request, route.topic, route.key_field)

    return produce


def register(
    worker: Worker,
    topology: Topology,
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

    async def health(request: web.Request) -> web.Response:
        status = worker.status()
        if status != "ok":
            return web.json_response({"status": status}, status=503)
        return web.json_response(
            {"status": "ok", "assigned_partitions": worker.assigned_partitions()}
        )

    async def metrics_view(request: web.Request) -> web.Response:
        metrics.assigned_partitions.set(worker.assigned_partitions())
        body, content_type = metrics.exposition()
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response

    web_app = worker.web_app
    web_app.middlewares.append(json_errors)
    router = web_app.router
    for view in topology.views:
        query = TableQuery(worker.served_table(view.table.name), metrics, end_offsets)
        router.add_get(view.path, view_handler(query, view))
    for window_view in topology.window_views:
        assert window_view.agent.table is not None
        served = worker.served_table(window_view.agent.table.name)
        router.add_get(
            window_view.path,
            window_view_handler(TableQuery(served, metrics, end_offsets), window_view),
        )
    router.add_get("/health", health)
    router.add_get("/metrics", metrics_view)
    for route in topology.ingest_routes:
        router.add_post(route.path, ingest_handler(ingest, route))
