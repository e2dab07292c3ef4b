"""The upstream client and the data path against upstreams writing exact bytes (tests.raw_upstream),
behind a real proxy process: HTTP framing, interim answers, misbehaving upstreams, the retry of a
dropped pooled connection, the deadline and the overload answers."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import httpx
import pytest

from tests.raw_upstream import RawConnection, RawUpstream, keep_alive_json, response
from tests.support import RunningProxy, metric_value, wait_until

ROUTES = """\
  docs:
    blue: docs_v1
    green: docs_v2
    green_percent: 0
  dies:
    blue: reuse-dies_v1
    green: reuse-dies_v2
    green_percent: 0
"""
ENVELOPE_OK = b'{"result":[],"status":"ok","time":0}'


async def cases(conn: RawConnection) -> None:
    """One case per path; anything else gets a small JSON answer, on a kept-alive connection."""
    while True:
        request = await conn.read_request(with_body=False)
        if request is None:
            return
        target = request.request_line.split(b" ")[1]
        if target == b"/early":  # answer before reading the body, then close
            await conn.write(response(413, b'{"status":{"error":"too big"},"time":0}', (b"connection: close",)))
            return
        length = request.header(b"content-length")
        if length:
            request.body = await conn.reader.readexactly(int(length))
        if b"reuse-dies" in target and conn.served:  # a pooled connection that dies under the request
            return
        if target == b"/close-delimited":
            await conn.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + ENVELOPE_OK)
            return
        if target == b"/chunked-trailers":
            await conn.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                b"trailer: x-trailer\r\n\r\n5\r\n[1,2]\r\n0\r\nx-trailer: evil\r\n\r\n"
            )
        elif target == b"/head":
            await conn.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1234\r\nx-upstream: raw\r\n\r\n")
        elif target == b"/interim":
            await conn.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </hint>\r\n\r\n"
                             + response(200, ENVELOPE_OK, (b"x-final: yes",)))
        elif target == b"/connection-named":
            await conn.write(response(200, ENVELOPE_OK, (b"connection: x-secret, keep-alive", b"x-secret: 1", b"x-kept: 1")))
        elif target == b"/unsolicited":
            await conn.write(response(200, b'{"first":1}') + response(200, b'{"GLUED":1}'))
        elif target == b"/late-byte":  # the start of an answer nobody asked for, once the first is complete
            await conn.write(response())
            await asyncio.sleep(0.2)
            await conn.write(b"HTTP/1.1 200 OK\r\nx-glued: 1\r\n")
        elif target == b"/bad-status":
            await conn.write(b"HTTP/1.1 999 Weird\r\ncontent-length: 2\r\n\r\n{}")
        elif target == b"/large":
            await conn.write(response(200, b"x" * (2 * 1024 * 1024)))
        else:
            await conn.write(response())
        conn.served += 1


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    with RawUpstream(cases) as upstream:
        proxy = RunningProxy(
            tmp_path_factory.mktemp("raw") / "proxy", upstream.url, ROUTES,
            upstream_options="timeout: 5s, max_response_bytes: 1048576",
        ).start()
        try:
            yield upstream, proxy
        finally:
            proxy.stop()


def envelope_error(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert set(document) == {"status", "time"}
    return document["status"]["error"]


def test_close_delimited_answer_is_read_to_the_end(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/close-delimited")
    assert answer.status_code == 200
    assert answer.content == ENVELOPE_OK


def test_chunked_answer_is_decoded_and_its_trailer_never_becomes_a_header(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/chunked-trailers")
    assert answer.status_code == 200 and answer.content == b"[1,2]"
    assert "x-trailer" not in answer.headers and "trailer" not in answer.headers


def test_head_gets_the_upstream_headers_and_length_and_no_body(raw):
    upstream, proxy = raw
    with socket.create_connection(("127.0.0.1", proxy.data_port), timeout=5) as sock:
        sock.sendall(b"HEAD /head HTTP/1.1\r\nhost: x\r\n\r\nGET /after-head HTTP/1.1\r\nhost: x\r\n\r\n")
        received = _read_until(sock, ENVELOPE_OK)
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-length: 1234" in head.lower() and b"x-upstream: raw" in head.lower()
    assert rest.startswith(b"HTTP/1.1 200")  # no body between the HEAD answer and the next one


def test_interim_1xx_answers_are_skipped(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/interim")
    assert answer.status_code == 200 and answer.content == ENVELOPE_OK
    assert answer.headers["x-final"] == "yes" and "link" not in answer.headers


def test_early_answer_before_the_body_was_read_reaches_the_client(raw):
    upstream, proxy = raw
    answer = httpx.post(proxy.url + "/early", content=b"x" * (4 * 1024 * 1024))
    assert answer.status_code == 413
    assert answer.json()["status"]["error"] == "too big"
    assert httpx.get(proxy.url + "/after-early").status_code == 200


def test_headers_named_in_connection_are_dropped_both_ways(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/connection-named", headers={"Connection": "x-internal", "x-internal": "1", "x-other": "2"})
    assert answer.status_code == 200
    assert "x-secret" not in answer.headers and answer.headers["x-kept"] == "1"
    sent = next(r for r in reversed(upstream.seen) if r.request_line.startswith(b"GET /connection-named"))
    assert sent.header(b"x-internal") is None and sent.header(b"x-other") == b"2"


def test_unsolicited_answer_is_not_glued_on_and_closes_that_connection(raw):
    upstream, proxy = raw
    with httpx.Client() as client:
        first = client.get(proxy.url + "/unsolicited")
        assert first.status_code == 200 and first.content == b'{"first":1}'
        after = client.get(proxy.url + "/after-unsolicited")
        assert after.status_code == 200 and after.content == ENVELOPE_OK
    by_target = {r.request_line.split(b" ")[1]: r.connection for r in upstream.seen}
    assert by_target[b"/after-unsolicited"] != by_target[b"/unsolicited"]


def test_unsolicited_bytes_on_an_idle_connection_close_it(raw):
    upstream, proxy = raw
    with httpx.Client() as client:
        assert client.get(proxy.url + "/late-byte").status_code == 200
        time.sleep(0.6)  # the byte arrives while the connection is idle in the pool
        after = client.get(proxy.url + "/after-late-byte")
    assert after.status_code == 200 and after.content == ENVELOPE_OK
    by_target = {r.request_line.split(b" ")[1]: r.connection for r in upstream.seen}
    assert by_target[b"/after-late-byte"] != by_target[b"/late-byte"]


def test_invalid_status_gives_a_502_in_the_envelope_not_a_second_response(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/bad-status")
    assert answer.status_code == 502
    assert "invalid HTTP status 999" in envelope_error(answer)
    assert "Traceback" not in proxy.server.log()


def test_answer_past_max_response_bytes_is_a_502_naming_the_limit(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/large")
    assert answer.status_code == 502
    assert "upstream.max_response_bytes" in envelope_error(answer)
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_upstream_errors_total", kind="too_large") >= 1
    assert httpx.get(proxy.url + "/after-large").status_code == 200


def test_deeply_nested_body_with_lookup_from_is_refused_without_an_error(raw):
    """Too deep to look into (RecursionError): its `lookup_from` must be rewritten and cannot be, so it
    is refused with 400 in Qdrant's envelope (issue 23: fail closed; Qdrant's own parser stops far
    sooner), never forwarded unchecked; the proxy neither fails (500) nor logs."""
    upstream, proxy = raw
    body = b'{"lookup_from":{"collection":"docs"},"query":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    log_before = proxy.server.log()
    seen_before = len(upstream.seen)
    answer = httpx.post(proxy.url + "/collections/docs/points/query", content=body)
    assert answer.status_code == 400 and "not JSON bluegreen-proxy can read" in answer.json()["status"]["error"]
    assert len(upstream.seen) == seen_before
    assert proxy.server.log()[len(log_before):] == ""


def test_websocket_upgrade_is_refused_in_the_envelope(raw):
    upstream, proxy = raw
    answer = httpx.get(proxy.url + "/collections", headers={
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    })
    assert answer.status_code == 400
    assert "upgrade" in envelope_error(answer)


@pytest.mark.parametrize(
    ("method", "path", "body", "retried"),
    [
        ("POST", "/collections/dies/points/scroll", b"{}", True),  # routed read
        ("PUT", "/collections/dies/points", b'{"points":[{"id":1,"vector":[1]}]}', True),  # upsert: by id
        ("POST", "/collections/dies/points/delete", b'{"points":[1,2]}', True),  # delete by id
        ("POST", "/collections/dies/points/delete", b'{"filter":{"must":[]}}', False),  # by filter
        ("GET", "/collections/reuse-dies-unrouted", b"", True),  # unrouted GET
        ("POST", "/collections/reuse-dies-unrouted/points/scroll", b"{}", False),  # unrouted POST
    ],
)
def test_dead_pooled_connection_is_retried_only_for_requests_safe_to_repeat(raw, method, path, body, retried):
    upstream, proxy = raw
    with httpx.Client() as client:
        assert client.get(proxy.url + "/warm").status_code == 200  # leaves a pooled connection
        before = len(upstream.seen)
        answer = client.request(method, proxy.url + path, content=body)
    sent = [r for r in upstream.seen[before:] if b"reuse-dies" in r.request_line]
    if retried:
        assert answer.status_code == 200
        assert len(sent) == 2 and sent[0].connection != sent[1].connection and sent[0].body == sent[1].body
    else:
        assert answer.status_code == 502
        assert "connection closed before a response" in envelope_error(answer)
        assert len(sent) == 1


# ---------------------------------------------------------------- deadline and overload


async def slow(conn: RawConnection) -> None:
    """Every answer takes 0.7 s; `/fail-slowly` then says 503."""
    while (request := await conn.read_request()) is not None:
        await asyncio.sleep(0.7)
        failing = b"/fail-slowly" in request.request_line or b"docs_v2" in request.request_line
        await conn.write(response(503 if failing else 200))


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """One upstream connection, one waiter, 1 s per request."""
    routes = "  docs:\n    blue: docs_v1\n    green: docs_v2\n    green_percent: 100\n"
    with RawUpstream(slow) as upstream:
        proxy = RunningProxy(
            tmp_path_factory.mktemp("narrow") / "proxy", upstream.url, routes,
            upstream_options="timeout: 1s, max_connections: 1, max_queue: 1",
        ).start()
        try:
            yield upstream, proxy
        finally:
            proxy.stop()


def _timed(method: str, url: str, delay: float = 0.0, **options) -> tuple[httpx.Response, float]:
    time.sleep(delay)
    started = time.monotonic()
    answer = httpx.request(method, url, timeout=10, **options)
    return answer, time.monotonic() - started


def _in_flight(upstream: RawUpstream, count: int) -> None:
    wait_until(lambda: len(upstream.seen) >= count, timeout=10)


def test_pool_wait_counts_against_the_one_deadline(narrow):
    upstream, proxy = narrow
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(_timed, "GET", proxy.url + "/a")
        _in_flight(upstream, 1)
        b, b_seconds = pool.submit(_timed, "GET", proxy.url + "/b").result()
        assert first.result()[0].status_code == 200
    assert b.status_code == 504 and "within 1s (upstream.timeout)" in envelope_error(b)
    assert b_seconds < 2.0  # waited for the connection, then had what was left of its 1 s (not 1 s more)


def test_failover_shares_the_deadline(narrow):
    upstream, proxy = narrow
    answer, seconds = _timed("POST", proxy.url + "/collections/docs/points/query", content=b"{}",
                             headers={"x-user-id": "u1"})
    assert answer.status_code == 504  # green failed after 0.7 s; blue had 0.3 s left
    assert seconds < 2.0


def test_full_wait_queue_is_refused_at_once_and_counted(tmp_path):
    """Causal, not timed: the upstream holds the one connection's request until the test has its refusal,
    so both later requests reach the proxy while the connection is busy, however loaded the machine, and
    the refusal cannot have waited for the connection (nor for the 30 s deadline a waiter has)."""
    release = threading.Event()

    async def held(conn: RawConnection) -> None:
        while await conn.read_request() is not None:
            await asyncio.get_running_loop().run_in_executor(None, release.wait)
            await conn.write(response())

    with RawUpstream(held) as upstream, RunningProxy(
        tmp_path / "proxy", upstream.url, ROUTES, upstream_options="timeout: 30s, max_connections: 1, max_queue: 1",
    ) as proxy:
        with ThreadPoolExecutor(3) as pool:
            try:
                busy = pool.submit(_timed, "GET", proxy.url + "/a")
                _in_flight(upstream, 1)
                late = [pool.submit(_timed, "GET", proxy.url + path) for path in ("/b", "/c")]
                answer, seconds = next(as_completed(late)).result()  # the other one waits in the queue
            finally:
                release.set()
            assert busy.result()[0].status_code == 200
            assert [future.result()[0].status_code for future in late].count(200) == 1  # the queued one
        assert answer.status_code == 503 and seconds < 15 and "upstream.max_queue" in envelope_error(answer)
        assert metric_value(proxy.metrics_text(), "bluegreen_upstream_errors_total", kind="overloaded") == 1


def test_server_concurrency_limit_answers_503_at_once(tmp_path):
    with RawUpstream(slow) as upstream:
        with RunningProxy(tmp_path / "proxy", upstream.url, ROUTES, extra_yaml="limits: {max_concurrency: 1}\n") as proxy:
            with ThreadPoolExecutor(2) as pool:
                busy = pool.submit(_timed, "GET", proxy.url + "/a")
                _in_flight(upstream, 1)
                refused, seconds = _timed("GET", proxy.url + "/b")
                assert busy.result()[0].status_code == 200
            assert refused.status_code == 503 and seconds < 0.5
            assert "limits.max_concurrency" in envelope_error(refused)
            assert metric_value(proxy.metrics_text(), "bluegreen_upstream_errors_total", kind="overloaded") == 1


def _read_until(sock: socket.socket, marker: bytes) -> bytes:
    received = b""
    deadline = time.monotonic() + 5
    while marker not in received and time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return received
