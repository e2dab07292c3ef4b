"""proxy.dataplane.app in process: ProxyApp served by uvicorn on a loopback socket, in front of a raw
recording upstream; dispatch, the colour headers, refusals in Qdrant's envelope and failover."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from proxy.dataplane.app import ProxyApp
from proxy.dataplane.live import LiveConfig
from proxy.dataplane.upstream import UpstreamClient
from proxy.metrics import Metrics
from routing.config import parse_config
from tests.inprocess import InProcessServer
from tests.raw_upstream import RawUpstream, response


class Watcher:
    def __init__(self):
        self.seen = []

    def observe(self, route, colour, operation, response, seconds):
        self.seen.append((route, colour, operation, None if response is None else response.status))

    def observe_pair(self, *args):
        pass


async def green_hangs_blue_answers(conn) -> None:
    while (request := await conn.read_request()) is not None:
        if b"docs_v2" in request.request_line:
            await asyncio.sleep(30)
            return
        await conn.write(response(body=b'{"result":{"points":[]},"status":"ok","time":0}'))


@pytest.fixture(scope="module")
def proxy():
    with RawUpstream(green_hangs_blue_answers) as upstream:
        config = parse_config(
            f"upstream: {{url: '{upstream.url}', timeout: 1s}}\n"
            "routes:\n  docs: {blue: docs_v1, green: docs_v2, green_percent: 100, allow_override: true}\n"
        )
        watcher = Watcher()
        app = ProxyApp(LiveConfig.initial(config, "h", "/x"), UpstreamClient(upstream.url, config.upstream), Metrics(), watcher)
        with InProcessServer(app) as server:
            yield server, upstream, watcher, app


def test_a_forced_blue_read_is_routed_and_labelled(proxy):
    server, upstream, watcher, _ = proxy
    answer = httpx.post(server.url + "/collections/docs/points/query", json={"query": [1]}, headers={"x-bluegreen-color": "blue"})
    assert answer.status_code == 200
    assert answer.headers["x-bluegreen-color"] == "blue" and answer.headers["x-bluegreen-collection"] == "docs_v1"
    assert upstream.seen[-1].request_line.startswith(b"POST /collections/docs_v1/points/query")


def test_a_green_timeout_is_greens_and_blue_is_not_asked(proxy):
    server, upstream, watcher, app = proxy
    asked = len(upstream.seen)
    answer = httpx.post(server.url + "/collections/docs/points/query", json={"query": [1]}, headers={"x-user-id": "u"}, timeout=10)
    assert answer.status_code == 504 and answer.headers["x-bluegreen-color"] == "green"
    assert [seen.request_line.split(b" ")[1] for seen in upstream.seen[asked:]] == [b"/collections/docs_v2/points/query"]
    assert watcher.seen[-1] == ("docs", "green", "query", None)
    assert "bluegreen_failovers_total{route=\"docs\"} 1" not in app.metrics.exposition().decode()


def test_a_logical_collection_delete_is_refused_in_the_envelope_with_cors(proxy):
    server, *_ = proxy
    answer = httpx.delete(server.url + "/collections/docs", headers={"origin": "https://page.example"})
    assert answer.status_code == 400 and "logical collection" in answer.json()["status"]["error"]
    assert answer.headers["access-control-allow-origin"] == "https://page.example"


def test_a_body_that_must_be_rewritten_and_cannot_is_refused(proxy):
    server, upstream, *_ = proxy
    asked = len(upstream.seen)
    answer = httpx.post(server.url + "/collections/docs/points/query", content=b'{"with_lookup":"docs","x":\xff}',
                        headers={"x-bluegreen-color": "blue"})
    assert answer.status_code == 400 and json.loads(answer.content)["status"]["error"].startswith("Wrong input")
    assert len(upstream.seen) == asked
