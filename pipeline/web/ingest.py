"""POST endpoints: a JSON body checked against the topic's schema, produced, acknowledged.

They can be switched off (``PIPELINE_INGEST_ENABLED=false``: 403) or need a bearer
token (``PIPELINE_INGEST_TOKEN``: 401 without it). A body is read up to
``PIPELINE_WEB_MAX_BODY_BYTES`` (413 beyond), must be JSON (415 for another
declared content type) and a record of the topic's schema with no unknown fields
(400). Any worker can produce, so POSTs need no routing.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import hdrs, web

from pipeline.serde.codec import Codecs
from pipeline.serde.errors import PipelineCodecError, RecordValidationError
from pipeline.streaming.producer import BatchProducer, Outgoing
from pipeline.web.http import error_response, key_problem


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

    producer: BatchProducer
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
        stored = await self.producer.send_and_wait(Outgoing(topic, key, value))
        return web.json_response(
            {"topic": stored.topic, "partition": stored.partition, "offset": stored.offset},
            status=202,
        )
