"""What the proxy sends upstream, byte for byte: a real echo server behind a real proxy process."""
from __future__ import annotations

import base64
import json

import httpx
import pytest

from routing.table import bucket
from tests.raw_upstream import RawConnection, RawUpstream, response
from tests.support import RunningProxy, metric_value, start_echo_upstream

ROUTES = """\
  weka:
    blue: weka
    green: weka_v2
    green_percent: 50
    writes: green
  docs:
    blue: docs_v1
    green: docs_v2
    green_percent: 50
  'my coll':
    blue: 'my coll'
    green: 'my coll v2'
    green_percent: 100
  guarded:
    blue: guarded_v1
    green: guarded_v2
    green_percent: 50
    guard: {}
"""


@pytest.fixture(scope="module")
def echo_proxy(tmp_path_factory):
    logs = tmp_path_factory.mktemp("echo")
    upstream, upstream_url = start_echo_upstream(logs)
    proxy = RunningProxy(
        logs / "proxy", upstream_url, ROUTES,
        extra_yaml="limits: {max_body_bytes: 65536}\n",
    ).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        upstream.stop()


def sent(response: httpx.Response) -> dict:
    echoed = response.json()["result"]
    echoed["body"] = base64.b64decode(echoed.pop("body_b64"))
    echoed["header_names"] = [name.lower() for name, _ in echoed["headers"]]
    return echoed


def header(echoed: dict, name: str) -> str | None:
    return next((v for k, v in echoed["headers"] if k.lower() == name), None)


def test_unrouted_request_passes_through_unchanged(echo_proxy):
    body = b'{"vector": [0.1, 0.2],   "limit": 3}'
    response = httpx.post(
        echo_proxy.url + "/collections/other/points/search?consistency=majority&timeout=3",
        content=body,
        headers={"api-key": "k1", "Authorization": "Bearer jwt", "x-custom": "v", "Connection": "keep-alive",
                 "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.headers["x-upstream"] == "echo"  # upstream headers come back
    assert "x-bluegreen-color" not in response.headers
    echoed = sent(response)
    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/collections/other/points/search?consistency=majority&timeout=3"
    assert echoed["body"] == body
    assert header(echoed, "api-key") == "k1"
    assert header(echoed, "authorization") == "Bearer jwt"
    assert header(echoed, "x-custom") == "v"
    assert header(echoed, "content-type") == "application/json"
    assert "connection" not in echoed["header_names"] or header(echoed, "connection") != "keep-alive"


def test_routed_read_rewrites_the_path_and_tags_the_response(echo_proxy):
    response = httpx.post(
        echo_proxy.url + "/collections/my%20coll/points/query/?timeout=5", content=b'{"query":[1.0]}',
        headers={"x-user-id": "u1"},
    )
    echoed = sent(response)
    assert echoed["raw_path"] == "/collections/my%20coll%20v2/points/query?timeout=5"  # canonical: trailing / trimmed
    assert echoed["body"] == b'{"query":[1.0]}'  # no reference inside: bytes untouched
    assert response.headers["x-bluegreen-color"] == "green"
    assert response.headers["x-bluegreen-collection"] == "my coll v2"


def test_body_references_follow_each_routes_own_colour(echo_proxy):
    body = {
        "prefetch": {"query": [0.1], "lookup_from": {"collection": "docs"},
                     "prefetch": [{"query": [0.2], "lookup_from": {"collection": "weka"}}]},
        "query": {"fusion": "rrf"},
        "with_lookup": "docs",
    }
    for user in range(40):
        response = httpx.post(
            echo_proxy.url + "/collections/weka/points/query/groups", json=body, headers={"x-user-id": f"u{user}"}
        )
        colour = response.headers["x-bluegreen-color"]
        echoed = sent(response)
        document = json.loads(echoed["body"])
        # docs follows its own split for the same key, not weka's colour (issue 9, item 5)
        expected_docs = "docs_v2" if bucket(b"docs", f"u{user}".encode()) < 5000 else "docs_v1"
        expected_weka = "weka_v2" if colour == "green" else "weka"
        assert echoed["raw_path"] == f"/collections/{expected_weka}/points/query/groups"
        assert document["prefetch"]["lookup_from"]["collection"] == expected_docs
        assert document["prefetch"]["prefetch"][0]["lookup_from"]["collection"] == expected_weka
        assert document["with_lookup"] == expected_docs


def test_write_policy_green_and_info_to_blue(echo_proxy):
    write = httpx.put(echo_proxy.url + "/collections/weka/points?wait=true", content=b'{"points":[]}')
    assert sent(write)["raw_path"] == "/collections/weka_v2/points?wait=true"
    assert write.headers["x-bluegreen-color"] == "green"
    info = httpx.get(echo_proxy.url + "/collections/weka_v2")  # a physical name: unrouted
    assert sent(info)["raw_path"] == "/collections/weka_v2"
    logical_info = httpx.get(echo_proxy.url + "/collections/docs/exists")
    assert sent(logical_info)["raw_path"] == "/collections/docs_v1/exists"
    assert logical_info.headers["x-bluegreen-color"] == "blue"


def test_changing_a_logical_collection_is_refused_in_qdrant_envelope(echo_proxy):
    for method, path in [("PUT", "/collections/docs"), ("DELETE", "/collections/docs/"),
                         ("PATCH", "/collections/docs"), ("PUT", "/collections/docs/index")]:
        response = httpx.request(method, echo_proxy.url + path, json={})
        assert response.status_code == 400
        error = response.json()["status"]["error"]
        assert "`docs_v1`" in error and "`docs_v2`" in error and "logical collection" in error
        assert isinstance(response.json()["time"], float)


def test_oversized_body_gets_413_in_qdrant_envelope(echo_proxy):
    response = httpx.put(echo_proxy.url + "/collections/other/points", content=b"x" * 70_000)
    assert response.status_code == 413
    assert "max_body_bytes" in response.json()["status"]["error"]
    chunked = httpx.put(echo_proxy.url + "/collections/other/points", content=iter([b"x" * 40_000, b"y" * 40_000]))
    assert chunked.status_code == 413
    assert httpx.get(echo_proxy.admin_url + "/healthz").status_code == 200


def test_override_header_is_ignored_where_not_allowed(echo_proxy):
    colours = {
        httpx.post(echo_proxy.url + "/collections/docs/points/count", content=b"{}",
                   headers={"x-user-id": f"u{i}", "x-bluegreen-color": "green"}).headers["x-bluegreen-color"]
        for i in range(30)
    }
    assert colours == {"blue", "green"}  # the 50 % split decides, not the header


@pytest.fixture
def impatient_echo(tmp_path):
    """An upstream that drops idle keep-alive connections after 0.2 s, behind a proxy that keeps them 10 s
    and waits at most 0.5 s for an answer."""
    upstream, upstream_url = start_echo_upstream(tmp_path, "--keepalive-timeout", "0.2")
    proxy = RunningProxy(
        tmp_path / "proxy", upstream_url, ROUTES, upstream_options="timeout: 500ms, keepalive_expiry: 10s"
    )
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        upstream.stop()


def test_pooled_connection_closed_by_upstream_is_retried_transparently(tmp_path):
    """The upstream takes each request and closes a kept-alive connection without answering (as one
    closing an idle connection just as a request arrives does): a read is sent again, on a new one."""

    async def dies_when_reused(conn: RawConnection) -> None:
        while await conn.read_request() is not None and not conn.served:
            await conn.write(response())
            conn.served += 1

    with RawUpstream(dies_when_reused) as upstream, RunningProxy(tmp_path / "proxy", upstream.url, ROUTES) as proxy:
        with httpx.Client() as client:
            for _ in range(3):
                answer = client.post(proxy.url + "/collections/docs/points/scroll", content=b"{}")
                assert answer.status_code == 200
        metrics = proxy.metrics_text()
    # Each request after the first met a dead pooled connection and was sent again on a fresh one.
    assert [r.connection for r in upstream.seen] == [1, 1, 2, 2, 3]
    assert metric_value(metrics, "bluegreen_requests_total", route="docs", status="error") == 0


@pytest.mark.slow  # waits out an upstream timeout
def test_slow_upstream_gives_504_in_qdrant_envelope_and_is_counted(impatient_echo):
    slow = httpx.post(impatient_echo.url + "/collections/docs/points/query", content=b"{}",
                      headers={"x-echo-delay-ms": "1500", "x-user-id": "u1"})
    assert slow.status_code == 504
    assert "did not answer within 0.5s" in slow.json()["status"]["error"]
    metrics = impatient_echo.metrics_text()
    assert metric_value(metrics, "bluegreen_upstream_errors_total", route="docs", kind="timeout") >= 1
    assert metric_value(metrics, "bluegreen_requests_total", route="docs", status="error") >= 1
    fast = httpx.post(impatient_echo.url + "/collections/docs/points/query", content=b"{}", headers={"x-user-id": "u1"})
    assert fast.status_code == 200


def test_expect_100_continue_is_answered_by_the_proxy_not_forwarded(echo_proxy):
    body = b'{"limit": 1, "filter": {"must": []}, "pad": "' + b"x" * 4000 + b'"}'
    response = httpx.post(
        echo_proxy.url + "/collections/other/points/scroll", content=body, headers={"Expect": "100-continue"}
    )
    assert response.status_code == 200
    echoed = sent(response)
    assert echoed["body"] == body and "expect" not in echoed["header_names"]


def test_guarded_search_asks_only_for_codings_the_guard_can_read(echo_proxy):
    """Qdrant compresses for clients that accept it; the guard decodes gzip and deflate, not br or zstd."""
    accept = "br, gzip;q=0.9, zstd, deflate;q=0.5"
    guarded = sent(httpx.post(echo_proxy.url + "/collections/guarded/points/query", content=b"{}",
                              headers={"x-user-id": "u1", "Accept-Encoding": accept}))
    assert header(guarded, "accept-encoding") == "gzip;q=0.9, deflate;q=0.5"
    brotli_only = sent(httpx.post(echo_proxy.url + "/collections/guarded/points/query", content=b"{}",
                                  headers={"x-user-id": "u1", "Accept-Encoding": "br"}))
    assert "accept-encoding" not in brotli_only["header_names"]  # the answer comes uncompressed
    scroll = sent(httpx.post(echo_proxy.url + "/collections/guarded/points/scroll", content=b"{}",
                             headers={"Accept-Encoding": accept}))
    assert header(scroll, "accept-encoding") == accept  # not a search: the guard does not read it
    unguarded = sent(httpx.post(echo_proxy.url + "/collections/docs/points/query", content=b"{}",
                                headers={"x-user-id": "u1", "Accept-Encoding": accept}))
    assert header(unguarded, "accept-encoding") == accept
