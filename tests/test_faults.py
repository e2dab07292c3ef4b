"""The fault proxy over real sockets: a child process in front of a small upstream served from a thread."""
from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from aiohttp import web

from routing.results import is_empty_result
from tests.faults import INJECTED_ERROR, clear_faults, held_requests, set_fault, start_fault_proxy
from tests.support import free_port, wait_until

POINT = {"id": 1, "version": 0, "score": 0.9, "payload": {"title": "a"}}
CANNED = {
    "points/search": [POINT],
    "points/search/batch": [[POINT], [POINT]],
    "points/query": {"points": [POINT]},
    "points/query/batch": [{"points": [POINT]}, {"points": []}],
    "points/query/groups": {"groups": [{"id": "g", "hits": [POINT]}]},
    "points/scroll": {"points": [POINT], "next_page_offset": None},
}


async def upstream_handler(request: web.Request) -> web.Response:
    """Canned Qdrant answers for search-type paths; an echo of the request for anything else."""
    body = await request.read()
    below = request.path.removeprefix("/collections/").partition("/")[2] if request.path.startswith("/collections/") else ""
    if below in CANNED:
        return web.json_response({"result": CANNED[below], "status": "ok", "time": 0.001}, dumps=_compact)
    if below == "missing":
        return web.json_response({"status": {"error": "Not found"}, "time": 0}, status=404)
    echoed = {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[name.decode(), value.decode()] for name, value in request.raw_headers],
        "body_b64": base64.b64encode(body).decode(),
    }
    return web.json_response({"result": echoed, "status": "ok", "time": 0}, headers={"x-upstream": "canned"})


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class ThreadedUpstream:
    """An aiohttp app on its own event loop in a thread, on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", upstream_handler)
        self.runner = web.AppRunner(app, access_log=None)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> "ThreadedUpstream":
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.thread.start()
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def fault_url(tmp_path_factory):
    upstream = ThreadedUpstream().start()
    server, url = start_fault_proxy(upstream.url, tmp_path_factory.mktemp("faults"))
    try:
        yield url
    finally:
        server.stop()
        upstream.stop()


@pytest.fixture
def client(fault_url):
    with httpx.Client(base_url=fault_url, timeout=5) as http:
        yield http
    clear_faults(fault_url)


def search(client: httpx.Client, collection: str, below: str = "points/search") -> httpx.Response:
    return client.post(f"/collections/{collection}/{below}", json={"vector": [0.1, 0.2], "limit": 3})


# ---------------------------------------------------------------- pass-through


def test_requests_pass_through_unchanged(client):
    body = b'{"limit": 2,\n "filter": null}\xff'
    response = client.post(
        "/collections/green/points/scroll/x?with_payload=true&q=a%20b", content=body,
        headers={"x-user-id": "u-17", "api-key": "secret", "content-type": "application/json"},
    )
    echoed = response.json()["result"]
    assert response.status_code == 200 and response.headers["x-upstream"] == "canned"
    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/collections/green/points/scroll/x?with_payload=true&q=a%20b"
    assert base64.b64decode(echoed["body_b64"]) == body
    hop_by_hop = ("host", "connection")
    received = {name.lower(): value for name, value in echoed["headers"] if name.lower() not in hop_by_hop}
    sent = {name.lower(): value for name, value in response.request.headers.items() if name.lower() not in hop_by_hop}
    assert received == sent  # nothing lost, nothing invented on the way
    assert received["x-user-id"] == "u-17" and received["api-key"] == "secret"


def test_upstream_errors_and_other_paths_pass_through(client):
    missing = client.get("/collections/green/missing")
    assert missing.status_code == 404 and missing.json()["status"]["error"] == "Not found"
    assert client.delete("/cluster/peer/3?force=true").json()["result"]["raw_path"] == "/cluster/peer/3?force=true"
    assert search(client, "green").json()["result"] == [POINT]


# ---------------------------------------------------------------- faults


def test_error_status_in_qdrants_envelope_for_that_collection_only(client, fault_url):
    set_fault(fault_url, "green", status=503)
    response = search(client, "green")
    assert response.status_code == 503 and response.content == INJECTED_ERROR
    assert client.get("/collections/green").status_code == 503  # everything under the collection
    assert search(client, "blue").status_code == 200
    assert search(client, "greenish").status_code == 200


def test_delay(client, fault_url):
    set_fault(fault_url, "green", delay_ms=300)
    started = time.perf_counter()
    assert search(client, "green").json()["result"] == [POINT]
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    search(client, "blue")
    assert time.perf_counter() - started < 0.3


def test_delay_then_error(client, fault_url):
    set_fault(fault_url, "green", delay_ms=200, status=500)
    started = time.perf_counter()
    assert search(client, "green").status_code == 500
    assert time.perf_counter() - started >= 0.2


def test_drop_closes_the_connection_without_a_response(client, fault_url):
    set_fault(fault_url, "green", drop=True)
    with pytest.raises(httpx.RemoteProtocolError):
        search(client, "green")
    assert search(client, "blue").status_code == 200


@pytest.mark.parametrize(
    "below, empty_result",
    [
        ("points/search", []),
        ("points/query", {"points": []}),
        ("points/query/groups", {"groups": []}),
        ("points/search/batch", [[], []]),
        ("points/query/batch", [{"points": []}, {"points": []}]),
    ],
)
def test_empty_rewrites_search_results(client, fault_url, below, empty_result):
    set_fault(fault_url, "green", empty=True)
    response = search(client, "green", below)
    assert response.status_code == 200
    assert response.json() == {"result": empty_result, "status": "ok", "time": 0.001}
    operation = {"points/search": "search", "points/query": "query", "points/query/groups": "query_groups",
                 "points/search/batch": "search_batch", "points/query/batch": "query_batch"}[below]
    assert is_empty_result(operation, response.content) is True  # compact, as Qdrant writes it


def test_empty_leaves_other_reads_alone(client, fault_url):
    set_fault(fault_url, "green", empty=True)
    assert search(client, "green", "points/scroll").json()["result"]["points"] == [POINT]
    assert client.get("/collections/green/missing").status_code == 404


def test_ratio_applies_to_a_share_of_requests(client, fault_url):
    set_fault(fault_url, "green", status=500, ratio=0.5)
    answers = [search(client, "green").status_code for _ in range(200)]
    assert answers == [200, 500] * 100  # evenly spread: every run the same
    set_fault(fault_url, "green", status=500, ratio=0)
    assert all(search(client, "green").status_code == 200 for _ in range(20))


def test_hold_keeps_requests_until_the_fault_is_cleared(client, fault_url):
    set_fault(fault_url, "green", hold=True)
    with ThreadPoolExecutor(2) as pool:
        answers = [pool.submit(search, client, "green") for _ in range(2)]
        wait_until(lambda: held_requests(fault_url) == {"green": 2})
        assert not any(answer.done() for answer in answers)
        assert search(client, "blue").status_code == 200  # other collections are not held
        clear_faults(fault_url, "green")
        assert [answer.result(timeout=10).json()["result"] for answer in answers] == [[POINT], [POINT]]
    assert held_requests(fault_url) == {}


def test_operations_limit_a_fault(client, fault_url):
    set_fault(fault_url, "green", status=500, operations=["query"])
    assert search(client, "green", "points/query").status_code == 500
    assert search(client, "green", "points/search").status_code == 200
    assert client.get("/collections/green").status_code == 200


def test_percent_encoded_collection_names(client, fault_url):
    set_fault(fault_url, "my coll", status=503)
    assert client.post("/collections/my%20coll/points/search", json={}).status_code == 503
    assert client.get("/__faults").json()["my coll"]["status"] == 503


# ---------------------------------------------------------------- control


def test_faults_are_listed_and_cleared(client, fault_url):
    set_fault(fault_url, "green", status=500)
    set_fault(fault_url, "blue", delay_ms=10)
    assert sorted(client.get("/__faults").json()) == ["blue", "green"]
    clear_faults(fault_url, "green")
    assert search(client, "green").status_code == 200
    assert list(client.get("/__faults").json()) == ["blue"]
    clear_faults(fault_url)
    assert client.get("/__faults").json() == {}


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"stauts": 500}, "unknown fields"),
        ({"status": 404}, "status: must be a 5xx status"),
        ({"status": 500, "drop": True}, "choose one"),
        ({"ratio": 2}, "ratio: must be from 0 to 1"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"drop": "yes"}, "drop, empty"),
        ({"operations": ["serch"]}, "operations: unknown ['serch']"),
        ({"operations": "query"}, "operations: must be a list"),
        ([1], "a fault is a JSON object"),
    ],
)
def test_invalid_faults_are_refused(client, fields, message):
    response = client.put("/__faults/green", json=fields)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert client.get("/__faults").json() == {}
