"""Bad HTTP input against real workers: malformed paths, bodies, content types and methods
answer 4xx JSON, never 5xx and never a trace; the body limit (413) and ingest protection
(token: 401; switched off: 403) hold, and nothing bad is produced."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.dev.workers import Deployment, WorkerProcess, wait_for
from tests.integration.conftest import StackInfo
from tests.integration.harness import end_offsets

pytestmark = pytest.mark.integration

TOKEN = f"it-token-{uuid.uuid4().hex}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 64 * 1024  # the default PIPELINE_WEB_MAX_BODY_BYTES

ITEM = {"sku": "HTTP-SKU", "quantity": 1, "unit_price_cents": 5}
USER = {"user_id": "http-u1", "email": "u1@shop.example", "name": "U", "registered_at": 1}
ORDER = {
    "order_id": "http-o1",
    "user_id": "http-u1",
    "items": [ITEM],
    "total_cents": 5,
    "created_at": 1,
}
STOCK = {"sku": "HTTP-SKU", "delta": 3, "reason": "restock", "adjusted_at": 1}
VALID = {"/users": USER, "/orders": ORDER, "/stock": STOCK}


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    raw: bytes

    def json(self) -> Any:
        return json.loads(self.raw)


def call(
    worker: WorkerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> Answer:
    """One request with the path and body exactly as given (urllib would re-quote)."""
    connection = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=60)
    try:
        if chunked:
            connection.request(
                method, path, body=iter([body or b""]), headers=headers or {}, encode_chunked=True
            )
        else:
            connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Answer(response.status, response.headers, response.read())
    finally:
        connection.close()


def post(
    worker: WorkerProcess,
    path: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Answer:
    data = raw if raw is not None else json.dumps(body).encode()
    return call(worker, "POST", path, data, {"Content-Type": content_type, **(headers or {})})


def assert_json_error(answer: Answer, *statuses: int) -> dict[str, Any]:
    assert answer.status in statuses, (answer.status, answer.raw[:300])
    assert answer.headers.get_content_type() == "application/json", answer.headers
    assert b"Traceback" not in answer.raw
    body = answer.json()
    assert isinstance(body, dict) and isinstance(body["error"], str), body
    return body


@dataclass
class Workers:
    deployment: Deployment
    guarded: WorkerProcess  # PIPELINE_INGEST_TOKEN set
    closed: WorkerProcess  # PIPELINE_INGEST_ENABLED=false, another deployment


@pytest.fixture(scope="module")
def workers(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    name = f"it-http-{uuid.uuid4().hex[:8]}"
    root = tmp_path_factory.mktemp(name)
    guarded_deployment = Deployment(
        name, root, stack.env, extra_env={"PIPELINE_INGEST_TOKEN": TOKEN}
    )
    closed_deployment = Deployment(
        f"{name}-closed",
        root / "closed",
        stack.env,
        extra_env={"PIPELINE_INGEST_ENABLED": "false"},
    )
    guarded = guarded_deployment.worker("guarded").start()
    closed = closed_deployment.worker("closed").start()
    try:
        guarded.wait_healthy()
        closed.wait_healthy()
        yield Workers(guarded_deployment, guarded, closed)
    finally:
        guarded.stop()
        closed.stop()


def input_offsets(workers: Workers) -> dict[str, dict[int, int]]:
    names, settings = workers.deployment.names, workers.deployment.settings
    topics = (names.user_registered, names.order_created, names.stock_adjusted)
    return {topic: end_offsets(settings, topic) for topic in topics}


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/stock/bad%00key", 400),
        ("/stock/bad%0d%0aSet-Cookie:%20x=1", 400),
        ("/stock/%e2%80%ae", 400),  # right-to-left override: not printable
        ("/users/%20%20/orders", 400),  # blank
        ("/stock/" + "K" * 300, 400),
        ("/stock/" + "%41" * 300, 400),  # 300 bytes once decoded
        ("/users/" + "u" * 5000 + "/orders", 400),
        ("/stock/%ff%fe", 404),  # not UTF-8: decoded with replacement characters
        ("/stock/%25", 404),
        ("/stock/%", 404),
        ("/stock/%zz", 404),
        ("/stock/%252e%252e", 404),
        ("/stock/a%2Fb", 404),
        ("/stock/%2e%2e%2fhealth", 404),
        ("/stock/..%2f..%2fetc%2fpasswd", 404),
        ("/stock/%c0%af", 404),  # overlong UTF-8 for "/"
        ("/users//orders", 404),
        ("/stock/..", 404),
        ("/stock/.", 404),
        ("/users/../orders", 404),
        ("/stock/", 404),
        ("/stock/x/y", 404),
        ("/router/", 404),  # Faust's own views are off
        ("/table/stock/", 404),
        ("/no/such/path?%00=%ff", 404),
    ],
)
def test_malformed_paths_answer_4xx_json(workers: Workers, path: str, status: int) -> None:
    assert_json_error(call(workers.guarded, "GET", path), status)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/users"),
        ("DELETE", "/orders"),
        ("PATCH", "/stock"),
        ("GET", "/orders"),
        ("POST", "/stock/HTTP-SKU"),
        ("POST", "/users/http-u1/orders"),
        ("DELETE", "/health"),
        ("PUT", "/metrics"),
        ("OPTIONS", "/users"),
    ],
)
def test_wrong_methods_answer_405_json(workers: Workers, method: str, path: str) -> None:
    answer = call(workers.guarded, method, path, b"{}", AUTH)
    assert_json_error(answer, 405)
    assert answer.headers["Allow"]


BAD_BODIES: list[tuple[str, bytes, int, str | None]] = [
    # (path, raw body, status, a field the details must name)
    ("/users", b"", 400, None),
    ("/users", b"{not json", 400, None),
    ("/users", b'{"user_id": "a",}', 400, None),
    ("/users", b"\xff\xfe\x00garbage", 400, None),
    ("/users", b"null", 400, None),
    ("/users", b"[]", 400, None),
    ("/orders", json.dumps([ORDER]).encode(), 400, None),
    ("/stock", b'"a string"', 400, None),
    ("/stock", b"12", 400, None),
    ("/stock", b"[" * 50_000 + b"]" * 50_000, 413, None),
    ("/stock", b"[" * 20_000 + b"]" * 20_000, 400, None),  # nesting too deep to parse
    ("/stock", b'{"delta": ' + b"9" * 5000 + b"}", 400, None),  # int too long to convert
    ("/users", json.dumps({**USER, "name": 5}).encode(), 400, "name"),
    ("/users", json.dumps({**USER, "registered_at": "yesterday"}).encode(), 400, "registered_at"),
    ("/users", json.dumps({k: v for k, v in USER.items() if k != "email"}).encode(), 400, "email"),
    ("/users", json.dumps({**USER, "is_admin": True}).encode(), 400, "is_admin"),
    ("/users", json.dumps({**USER, "user_id": None}).encode(), 400, "user_id"),
    ("/users", json.dumps({**USER, "user_id": ""}).encode(), 400, "user_id"),
    ("/users", json.dumps({**USER, "user_id": "a\x00b"}).encode(), 400, "user_id"),
    ("/users", json.dumps({**USER, "user_id": "u" * 1000}).encode(), 400, "user_id"),
    ("/orders", json.dumps({**ORDER, "items": {"sku": "A"}}).encode(), 400, "items"),
    (
        "/orders",
        json.dumps({**ORDER, "items": [{**ITEM, "colour": "red"}]}).encode(),
        400,
        "items[0].colour",
    ),
    ("/orders", json.dumps({**ORDER, "total_cents": 2**63}).encode(), 400, "total_cents"),
    ("/orders", json.dumps({**ORDER, "total_cents": 1.5}).encode(), 400, "total_cents"),
    ("/orders", b'{"total_cents": NaN}', 400, "total_cents"),
    ("/stock", json.dumps({**STOCK, "delta": True}).encode(), 400, "delta"),
    ("/stock", json.dumps({**STOCK, "delta": 2**31}).encode(), 400, "delta"),
    ("/stock", json.dumps({**STOCK, "reason": "x" * (LIMIT + 1)}).encode(), 413, None),
]


def test_bad_bodies_answer_4xx_json_and_produce_nothing(workers: Workers) -> None:
    before = input_offsets(workers)
    for path, raw, status, field in BAD_BODIES:
        body = assert_json_error(post(workers.guarded, path, raw=raw, headers=AUTH), status)
        if field is not None:
            assert any(str(d).startswith(field) for d in body["details"]), (path, raw[:80], body)
        if status == 413:
            assert body["details"] == {"limit_bytes": LIMIT}
    # A chunked body has no Content-Length: the limit holds while reading.
    chunked = call(
        workers.guarded,
        "POST",
        "/stock",
        b" " * (LIMIT + 10),
        {"Content-Type": "application/json", **AUTH},
        chunked=True,
    )
    assert_json_error(chunked, 413)
    assert input_offsets(workers) == before


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("text/plain", 415),
        ("application/x-www-form-urlencoded", 415),
        ("multipart/form-data; boundary=x", 415),
        ("application/xml", 415),
        ("application/json; charset=utf-8", 202),
        ("application/vnd.shop.order+json", 202),
    ],
)
def test_only_json_content_types_are_accepted(
    workers: Workers, content_type: str, status: int
) -> None:
    answer = post(workers.guarded, "/orders", ORDER, headers=AUTH, content_type=content_type)
    if status == 202:
        assert answer.status == 202, answer.raw
    else:
        assert_json_error(answer, status)


@pytest.mark.parametrize("path", sorted(VALID))
def test_ingest_needs_the_token_and_never_echoes_it(workers: Workers, path: str) -> None:
    before = input_offsets(workers)
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": "Bearer"},
    ):
        answer = post(workers.guarded, path, VALID[path], headers=headers)
        assert_json_error(answer, 401)
        assert answer.headers["WWW-Authenticate"] == "Bearer"
        assert TOKEN.encode() not in answer.raw
    assert input_offsets(workers) == before
    answer = post(workers.guarded, path, VALID[path], headers=AUTH)
    assert answer.status == 202, answer.raw
    assert TOKEN.encode() not in answer.raw
    # Views stay open.
    assert call(workers.guarded, "GET", "/health").status == 200
    assert TOKEN not in workers.guarded.log.read_text(errors="replace")


@pytest.mark.parametrize("path", sorted(VALID))
def test_switched_off_ingest_answers_403_and_views_stay_open(workers: Workers, path: str) -> None:
    body = assert_json_error(post(workers.closed, path, VALID[path]), 403)
    assert "disabled" in body["error"]
    assert call(workers.closed, "GET", "/health").status == 200
    assert_json_error(call(workers.closed, "GET", "/stock/NEVER-SEEN"), 404)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    sorted({*USER, *ORDER, *STOCK, "sku", "quantity", "unit_price_cents"})
)
BODIES = JSON_VALUES | st.dictionaries(FIELD_NAMES | st.text(max_size=8), JSON_VALUES)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(path=st.sampled_from(sorted(VALID)), body=BODIES)
def test_generated_bodies_never_answer_5xx(workers: Workers, path: str, body: Any) -> None:
    answer = post(workers.guarded, path, body, headers=AUTH)
    if answer.status != 202:  # a generated body may, rarely, be a valid record
        assert_json_error(answer, 400)


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(key=st.text(max_size=300), view=st.sampled_from(["/stock/{}", "/users/{}/orders"]))
def test_generated_keys_never_answer_5xx(workers: Workers, key: str, view: str) -> None:
    answer = call(workers.guarded, "GET", view.format(quote(key, safe="")))
    if answer.status == 404 and not key:
        return  # an empty segment matches no route at all
    assert_json_error(answer, 400, 404)


def test_the_worker_survived_it_all(workers: Workers) -> None:
    assert workers.guarded.running()
    wait_for("the guarded worker to be healthy", workers.guarded.healthy)
