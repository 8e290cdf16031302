"""What every HTTP answer shares: errors as JSON (never a stack trace) and key checks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = 256

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
