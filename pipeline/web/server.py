"""The worker's HTTP side (the contract's HTTP table), on Faust's aiohttp web server:
table views (pipeline.web.views), ingest (pipeline.web.ingest), health and metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from faust.types import AppT

from pipeline.domain.encoding import decode_stock_row, decode_user_stats
from pipeline.serde.codec import Codecs
from pipeline.settings import Settings
from pipeline.streaming.metrics import Metrics
from pipeline.streaming.tables import Tables
from pipeline.topics import TopicNames
from pipeline.web.http import json_errors
from pipeline.web.ingest import Ingest
from pipeline.web.views import TableQuery


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
        app.batch_producer,  # type: ignore[attr-defined]  # app is a PipelineApp
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
