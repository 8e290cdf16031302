"""Views of windowed tables: ``GET /skus/{sku}/sales?from=&to=`` answers the key's windows
whose start is in ``[from, to)`` (ISO-8601 or epoch milliseconds; by default every window
retained), in start order, each with ``final`` once closed. Routed and answered from
copies as every view (pipeline.web.views): 404 for a key without windows, 400 for a range
that does not parse or runs backwards.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pipeline.streaming.event_time import iso, millis
from pipeline.streaming.topology import WindowView
from pipeline.streaming.windows import StoredWindow, stored_windows
from pipeline.web.http import Handler, error_response
from pipeline.web.views import TableQuery


class BadRange(ValueError):
    pass


def instant(text: str, name: str) -> int:
    """A range bound: epoch milliseconds, or ISO-8601 (UTC when it names no offset)."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadRange(f"{name}={text!r} is neither ISO-8601 nor epoch milliseconds") from None
    return millis(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC))


def window_range(query: dict[str, str]) -> tuple[int | None, int | None]:
    start = instant(query["from"], "from") if "from" in query else None
    end = instant(query["to"], "to") if "to" in query else None
    if start is not None and end is not None and start > end:
        raise BadRange(f"from ({iso(start)}) is after to ({iso(end)})")
    return start, end


def window_view_handler(query: TableQuery, view: WindowView[Any]) -> Handler:
    async def answer(request: web.Request) -> web.Response:
        key = request.match_info[view.parameter]
        try:
            start, end = window_range(dict(request.query))
        except BadRange as bad:
            return error_response(400, "bad range", {"range": str(bad)})

        def find(partition: int, raw_key: bytes) -> list[StoredWindow] | None:
            found = stored_windows(view.agent, query.table, partition, raw_key)
            return found or None

        def render(found: list[StoredWindow]) -> dict[str, Any]:
            windows = [
                {
                    "start": iso(stored.window.start),
                    "end": iso(stored.window.end),
                    **view.render(stored.row),
                    "final": stored.final,
                }
                for stored in found
                if (start is None or stored.window.start >= start)
                and (end is None or stored.window.start < end)
            ]
            return {view.parameter: key, "windows": windows}

        return await query.answer(request, key, find, render)

    return answer
