"""Shadow reads end to end: client -> proxy -> fault injector -> embedded upstream, with crafted data.

Blue and green hold the same 40 ids. For the query "axis 0" blue's top 10 are ids 0..9; green keeps
the vectors of ids 0..6, moves 7..9 far away and moves 10..12 into their places, so green's top 10
are 0..6, 10, 11, 12: an overlap@10 of exactly 0.7 on every comparison (RBO 0.8682, computed by hand
in test_overlap.py).
"""
from __future__ import annotations

import asyncio
import sys
import threading
import time
import uuid

import aiohttp
import httpx
import pytest
from aiohttp import web
from qdrant_client import models

from routing.overlap import rank_biased_overlap
from routing.table import bucket
from tests.faults import clear_faults, set_fault
from tests.openai_embeddings import vector_for
from tests.support import RunningProxy, ServerProcess, free_port, metric_value, qdrant_client, route_yaml, wait_until

DIM = 8
QUERY = [1.0] + [0.0] * (DIM - 1)
MATCHES_NOTHING = {"must": [{"key": "home", "match": {"value": "nowhere"}}]}
# The latency rule is not under test here: on a loaded machine a 600 ms spike must not trip it first.
FAST_GUARD = "{interval: 200ms, window: 2s, min_requests: 20, error_for: 600ms, latency_for: 600ms, max_latency_ratio: 1000, empty_for: 600ms%s}"
EXPECTED_RBO = rank_biased_overlap(list(range(10)), [0, 1, 2, 3, 4, 5, 6, 10, 11, 12], 10)


def near(rank: int) -> list[float]:
    """Cosine similarity to QUERY falls with rank (0.9988 ... 0.894)."""
    return [1.0, 0.05 * (rank + 1)] + [0.0] * (DIM - 2)


def far(point_id: int) -> list[float]:
    vector = [0.1] + [0.0] * (DIM - 1)
    vector[2 + point_id % (DIM - 2)] = 1.0
    return vector


def crafted(upstream_url: str, blue: str, green: str) -> None:
    direct = qdrant_client(upstream_url, timeout=30)
    green_near = {**{i: i for i in range(7)}, 10: 7, 11: 8, 12: 9}  # id -> rank
    for name, ranks in ((blue, {i: i for i in range(10)}), (green, green_near)):
        direct.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        direct.upsert(name, [
            models.PointStruct(id=i, vector=near(ranks[i]) if i in ranks else far(i), payload={"home": name})
            for i in range(40)
        ], wait=True)
    direct.close()


@pytest.fixture
def collections(faulty_upstream):
    fault_url, upstream_url = faulty_upstream
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"sh_{tag}", f"sh_{tag}_blue", f"sh_{tag}_green"
    crafted(upstream_url, blue, green)
    yield logical, blue, green
    clear_faults(fault_url)


def shadow_results(proxy: RunningProxy, logical: str) -> dict[str, float]:
    text = proxy.metrics_text()
    return {
        result: metric_value(text, "bluegreen_shadow_requests_total", route=logical, result=result)
        for result in ("compared", "skipped", "dropped", "error")
    }


def searches(proxy_url: str, logical: str, users: list[str], body: dict | None = None, concurrency: int = 8) -> list[float]:
    """One query per user, `concurrency` at a time; each client-side latency in seconds (all must be 200)."""
    body = body or {"query": QUERY, "limit": 10}

    async def run() -> list[float]:
        latencies: list[float] = []
        queue = list(users)
        async with aiohttp.ClientSession() as session:
            async def worker() -> None:
                while queue:
                    user = queue.pop()
                    started = time.perf_counter()
                    async with session.post(
                        f"{proxy_url}/collections/{logical}/points/query", json=body, headers={"x-user-id": user},
                    ) as response:
                        await response.read()
                        assert response.status == 200, await response.text()
                    latencies.append(time.perf_counter() - started)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies

    return asyncio.run(run())


def green_users(logical: str, count: int, threshold: int = 5000) -> list[str]:
    """Keys the split sends to green at 50 % (the route's salt is its name)."""
    users, i = [], 0
    while len(users) < count:
        key = f"attacker-{i}"
        if bucket(logical.encode(), key.encode()) < threshold:
            users.append(key)
        i += 1
    return users


# ---------------------------------------------------------------- scores


def test_exported_mean_overlap_matches_the_shared_fraction(collections, proxies):
    logical, blue, green = collections
    proxy = proxies(route_yaml(logical, blue, green, 50, shadow="{sample: 1.0, k: 10}"))
    on_green = green_users(logical, 3)
    on_blue = [f"blue-{i}" for i in range(200) if bucket(logical.encode(), f"blue-{i}".encode()) >= 5000][:3]
    for user in on_green + on_blue:  # the real client, both colours answering, five queries each
        client = qdrant_client(proxy.url, timeout=10, headers={"x-user-id": user})
        try:
            for _ in range(5):
                assert len(client.query_points(logical, query=QUERY, limit=10).points) == 10
        finally:
            client.close()
    client = qdrant_client(proxy.url, timeout=10, headers={"x-user-id": on_green[0]})
    try:
        for _ in range(5):
            answers = client.query_batch_points(logical, [
                models.QueryRequest(query=QUERY, limit=10), models.QueryRequest(query=QUERY, limit=10),
            ])
            assert [len(answer.points) for answer in answers] == [10, 10]
    finally:
        client.close()

    wait_until(lambda: shadow_results(proxy, logical)["compared"] == 35, timeout=15)
    text = proxy.metrics_text()
    assert shadow_results(proxy, logical) == {"compared": 35, "skipped": 0, "dropped": 0, "error": 0}
    count = metric_value(text, "bluegreen_shadow_overlap_count", route=logical)
    assert count == 30 + 5 * 2  # one score per sub-request
    assert metric_value(text, "bluegreen_shadow_overlap_sum", route=logical) / count == pytest.approx(0.7)
    assert metric_value(text, "bluegreen_shadow_overlap_bucket", route=logical, le="0.6") == 0
    assert metric_value(text, "bluegreen_shadow_overlap_bucket", route=logical, le="0.7") == count
    assert metric_value(text, "bluegreen_shadow_rbo_sum", route=logical) / count == pytest.approx(EXPECTED_RBO)
    assert metric_value(text, "bluegreen_shadow_latency_ratio_count", route=logical) == 35
    # Both colours answered clients, so both directions of shadow were compared; shadow exchanges
    # are not client requests: the request counters hold only the 35 client reads.
    assert metric_value(text, "bluegreen_requests_total", route=logical, color="green") == 20
    assert metric_value(text, "bluegreen_requests_total", route=logical, color="blue") == 15


def test_reads_that_cannot_be_valid_on_the_other_colour_are_skipped(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    small = f"{green}_4d"  # another dimension: a blue query vector cannot be sent there
    direct = qdrant_client(faulty_upstream[1], timeout=30)
    direct.create_collection(small, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    direct.close()
    other = f"{logical}_model"
    proxy = proxies(
        route_yaml(logical, blue, green, 50, shadow="{sample: 1.0}", allow_override="true")
        + route_yaml(other, blue, small, 0, shadow="{sample: 1.0}")
    )

    async def forced() -> None:
        async with aiohttp.ClientSession() as session:
            for colour in ("blue", "green"):
                async with session.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": QUERY},
                                        headers={"x-bluegreen-color": colour}) as response:
                    assert response.status == 200 and response.headers["x-bluegreen-color"] == colour

    asyncio.run(forced())
    searches(proxy.url, other, [f"u{i}" for i in range(5)])
    searches(proxy.url, other, ["scroller"], body={"query": 3, "limit": 3})  # by id: valid on both, compared
    wait_until(lambda: shadow_results(proxy, other)["skipped"] == 5 and shadow_results(proxy, other)["error"] == 1)
    assert shadow_results(proxy, logical) == {"compared": 0, "skipped": 2, "dropped": 0, "error": 0}
    # The id query reached the empty 4-dim collection, which has no point 3: Qdrant's 404 is an error.
    assert shadow_results(proxy, other) == {"compared": 0, "skipped": 5, "dropped": 0, "error": 1}


# ---------------------------------------------------------------- off the client's path


def test_a_slow_shadow_leaves_the_clients_latency_unchanged(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    plain = f"{logical}_plain"
    set_fault(faulty_upstream[0], green, delay_ms=400)
    proxy = proxies(
        route_yaml(logical, blue, green, 0, shadow="{sample: 1.0, max_inflight: 64}") + route_yaml(plain, blue, green, 0)
    )
    users = [f"u{i}" for i in range(20)]
    searches(proxy.url, plain, users[:5], concurrency=1)  # warm the pool
    unshadowed = sorted(searches(proxy.url, plain, users, concurrency=1))
    shadowed = sorted(searches(proxy.url, logical, users, concurrency=1))
    assert max(shadowed) < 0.3, shadowed  # no client waited for its 400 ms shadow
    assert shadowed[10] < 2 * unshadowed[10] + 0.02, (shadowed, unshadowed)

    wait_until(lambda: shadow_results(proxy, logical)["compared"] == 20, timeout=15)
    text = proxy.metrics_text()
    # Green (the shadow) took over 400 ms, blue a few: every pair's green/blue ratio is above 10.
    assert metric_value(text, "bluegreen_shadow_latency_ratio_count", route=logical) == 20
    assert metric_value(text, "bluegreen_shadow_latency_ratio_bucket", route=logical, le="10.0") == 0


def test_max_inflight_drops_and_counts(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, delay_ms=1500)
    proxy = proxies(route_yaml(logical, blue, green, 0, shadow="{sample: 1.0, max_inflight: 2}"))
    latencies = searches(proxy.url, logical, [f"u{i}" for i in range(12)], concurrency=1)
    assert max(latencies) < 1.0
    seen = shadow_results(proxy, logical)
    assert seen["dropped"] >= 8, seen  # 2 in flight for 1.5 s; the rest came within that time
    wait_until(lambda: sum(shadow_results(proxy, logical).values()) == 12, timeout=10)
    final = shadow_results(proxy, logical)
    assert final["compared"] == 12 - final["dropped"] and final["error"] == final["skipped"] == 0


# ---------------------------------------------------------------- the guard


@pytest.mark.parametrize("action", ["rollback", "alert"])
def test_guard_trips_on_min_overlap(collections, proxies, action):
    logical, blue, green = collections
    guard = FAST_GUARD % f", min_overlap: 0.9, overlap_for: 600ms, action: {action}"
    proxy = proxies(route_yaml(logical, blue, green, 50, shadow="{sample: 1.0}", guard=guard))
    key = "state" if action == "rollback" else "last_alert"
    deadline, batch = time.monotonic() + 20, 0
    while time.monotonic() < deadline:
        searches(proxy.url, logical, [f"u{batch}-{i}" for i in range(60)])
        batch += 1
        status = proxy.admin_json()["routes"][logical]
        if (status["state"] == "rolled_back") if action == "rollback" else status["last_alert"]:
            break
    status = proxy.admin_json()["routes"][logical]
    metrics = proxy.metrics_text()
    if action == "rollback":
        assert (status["state"], status["reason"]) == ("rolled_back", "overlap"), status
        figures = status["figures"]
        assert metric_value(metrics, "bluegreen_rollbacks_total", route=logical, reason="overlap") == 1
        assert status["effective_green_percent"] == 0
    else:
        assert status["state"] == "active" and status["last_alert"]["reason"] == "overlap", status
        figures = status["last_alert"]["figures"]
        assert metric_value(metrics, "bluegreen_rollbacks_total", route=logical) == 0
        assert "mean overlap@k 0.700" in status["last_alert"]["detail"]
    assert figures["mean_overlap"] == pytest.approx(0.7) and figures["comparisons"] >= 20, key
    assert figures["min_overlap"] == 0.9


def test_searches_matching_nothing_on_both_colours_do_not_trip_the_empty_rule_when_shadowed(collections, proxies):
    """A client picks keys that land on green and sends searches whose filter matches nothing."""
    logical, blue, green = collections
    guard = FAST_GUARD % ""
    shadowed = proxies(route_yaml(logical, blue, green, 50, shadow="{sample: 1.0}", guard=guard), name="shadowed")
    unshadowed = proxies(route_yaml(logical, blue, green, 50, guard=guard), name="unshadowed")
    attackers = green_users(logical, 40)
    started, batch = time.monotonic(), 0
    # At least 3 s of both (15 judgements of the 600 ms rule), and until the unshadowed one trips.
    while time.monotonic() - started < 3 or unshadowed.admin_json()["routes"][logical]["state"] == "active":
        for proxy in (shadowed, unshadowed):
            searches(proxy.url, logical, [f"user-{batch}-{i}" for i in range(40)])
            searches(proxy.url, logical, attackers, body={"query": QUERY, "filter": MATCHES_NOTHING})
        batch += 1
        if time.monotonic() - started > 30:
            break
    # The attack works on per-colour shares ...
    assert unshadowed.admin_json()["routes"][logical]["reason"] == "empty_results"
    # ... and not on pairs: green empty where blue is empty too is no evidence against green.
    status = shadowed.admin_json()["routes"][logical]
    assert status["state"] == "active" and status["last_alert"] is None, status
    assert shadow_results(shadowed, logical)["compared"] >= 200


def test_shadowed_empty_rule_trips_when_green_alone_comes_back_empty(collections, faulty_upstream, proxies):
    logical, blue, green = collections
    set_fault(faulty_upstream[0], green, empty=True, operations=["query"])
    proxy = proxies(route_yaml(logical, blue, green, 50, shadow="{sample: 1.0}", guard=FAST_GUARD % ""))
    deadline, batch = time.monotonic() + 20, 0
    while time.monotonic() < deadline and proxy.admin_json()["routes"][logical]["state"] != "rolled_back":
        searches(proxy.url, logical, [f"u{batch}-{i}" for i in range(60)])
        batch += 1
    status = proxy.admin_json()["routes"][logical]
    assert (status["state"], status["reason"]) == ("rolled_back", "empty_results"), status
    assert status["figures"]["empty_judged_on"] == "shadow_pairs"
    assert status["figures"]["green_empty_share"] == 1.0 and status["figures"]["blue_empty_share"] == 0.0


# ---------------------------------------------------------------- an embed route: text in, each colour its own model

SENTENCES = [f"sentence number {i} about {topic}" for i, topic in enumerate(
    ["cats", "qubits", "Paris", "bananas", "markets", "plants", "marathons", "violins", "volcanoes", "bicycles"]
)]


@pytest.fixture
def embedding_services(tmp_path):
    """Two OpenAI-compatible services: blue's model makes 16-dim vectors, green's 24-dim ones."""
    started, urls = [], {}
    for colour, dimensions in (("blue", 16), ("green", 24)):
        port = free_port()
        server = ServerProcess(
            [sys.executable, "-m", "tests.openai_embeddings", "--port", str(port), "--dimensions", str(dimensions)],
            f"http://127.0.0.1:{port}/", tmp_path / f"embed-{colour}.log",
        ).start()
        started.append(server)
        urls[colour] = f"http://127.0.0.1:{port}"
    yield urls
    for server in started:
        server.stop()


def test_an_embed_route_is_shadowed_with_each_colours_own_embedding(faulty_upstream, embedding_services, tmp_path):
    tag = uuid.uuid4().hex[:8]
    logical, blue, green = f"txt_{tag}", f"txt_{tag}_blue", f"txt_{tag}_green"
    direct = qdrant_client(faulty_upstream[1], timeout=30)
    for name, dimensions in ((blue, 16), (green, 24)):  # each sentence stored with its colour's model
        direct.create_collection(name, vectors_config=models.VectorParams(size=dimensions, distance=models.Distance.COSINE))
        direct.upsert(name, [
            models.PointStruct(id=i, vector=vector_for(text, dimensions)) for i, text in enumerate(SENTENCES)
        ], wait=True)
    direct.close()
    embedders = (
        "embedders:\n"
        f"  blue_model: {{type: openai, url: '{embedding_services['blue']}/v1', model: m16, dimensions: 16}}\n"
        f"  green_model: {{type: openai, url: '{embedding_services['green']}/v1', model: m24, dimensions: 24}}\n"
    )
    routes = route_yaml(logical, blue, green, 50, embed="{blue: blue_model, green: green_model}", shadow="{sample: 1.0}")
    proxy = RunningProxy(tmp_path / "proxy", faulty_upstream[0], routes, extra_yaml=embedders).start()
    try:
        answered = {}
        for i, text in enumerate(SENTENCES):
            user = f"reader-{i}"
            client = qdrant_client(proxy.url, cloud_inference=True, timeout=30, headers={"x-user-id": user})
            try:
                hits = client.query_points(logical, query=models.Document(text=text, model="any"), limit=1).points
            finally:
                client.close()
            assert [hit.id for hit in hits] == [i]
            answered[user] = bucket(logical.encode(), user.encode()) < 5000
        assert set(answered.values()) == {True, False}  # both colours answered some, so shadows went both ways
        wait_until(lambda: shadow_results(proxy, logical)["compared"] == len(SENTENCES), timeout=15)
        assert shadow_results(proxy, logical) == {"compared": 10, "skipped": 0, "dropped": 0, "error": 0}
        text = proxy.metrics_text()
        # The same sentence is the top hit on both colours only if each embedded it with its own model.
        assert metric_value(text, "bluegreen_shadow_overlap_sum", route=logical) == 10
        assert metric_value(text, "bluegreen_shadow_rbo_sum", route=logical) == pytest.approx(10)
        for colour in ("blue", "green"):  # every sentence reached both models: once answered, once shadowed
            received = [item for request in httpx.get(f"{embedding_services[colour]}/requests").json() for item in request["body"]["input"]]
            assert sorted(set(received)) == sorted(SENTENCES), colour
    finally:
        proxy.stop()


# ---------------------------------------------------------------- credentials: the shadow carries what the answered read carried


class RecordingSearchUpstream:
    """A Qdrant stand-in on a thread of its own: answers every search with points 1, 2, 3 and records
    each request's collection path and `api-key` header."""

    def __init__(self):
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, api-key)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append((request.method, request.path, request.headers.get("api-key")))
        if request.method == "GET":
            return web.json_response({"status": {"error": "not kept here"}, "time": 0}, status=404)
        points = [{"id": i, "score": 1.0 - i / 10} for i in (1, 2, 3)]
        return web.json_response({"result": {"points": points}, "status": "ok", "time": 0})

    def __enter__(self) -> "RecordingSearchUpstream":
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def searches(self) -> list[tuple[str, str | None]]:
        """(collection, api-key) of each search, in arrival order."""
        return [(path.split("/")[2], key) for method, path, key in self.seen if method == "POST"]


@pytest.mark.parametrize("authenticated", [False, True])
def test_the_shadow_carries_the_credentials_of_the_answered_read(tmp_path, authenticated):
    clients = "clients: {api_keys: [{key: reader-key, access: r}], anonymous: none}\n" if authenticated else ""
    with RecordingSearchUpstream() as upstream:
        proxy = RunningProxy(
            tmp_path / "proxy", upstream.url, route_yaml("kb", "kb_blue", "kb_green", 0, shadow="{sample: 1.0}"),
            extra_yaml=clients, upstream_options="api_key: proxy-secret, timeout: 10s",
        ).start()
        try:
            sent = {"api-key": "reader-key"} if authenticated else {"api-key": "client-own-key"}
            answer = httpx.post(f"{proxy.url}/collections/kb/points/query", json={"query": QUERY}, headers={"x-user-id": "u1", **sent})
            assert answer.status_code == 200
            wait_until(lambda: shadow_results(proxy, "kb")["compared"] == 1)
            if not authenticated:  # a client without a key: nothing to carry
                assert httpx.post(f"{proxy.url}/collections/kb/points/query", json={"query": QUERY}).status_code == 200
                wait_until(lambda: shadow_results(proxy, "kb")["compared"] == 2)
        finally:
            proxy.stop()
    expected_key = "proxy-secret" if authenticated else "client-own-key"
    searches = upstream.searches()
    assert searches[:2] == [("kb_blue", expected_key), ("kb_green", expected_key)]
    if not authenticated:
        assert searches[2:] == [("kb_blue", None), ("kb_green", None)]  # the proxy's key lent to no one
    # The vector-size look-ups are the proxy's own calls: its own key.
    assert {key for method, _, key in upstream.seen if method == "GET"} == {"proxy-secret"}


# ---------------------------------------------------------------- in process (proxy.dataplane.shadow alone)


def test_a_sampled_read_is_sent_in_the_other_colours_form_and_compared_in_process():
    """ShadowSender with the data path's own UpstreamForms, against a raw upstream: the other colour gets
    its collection and its lookups mapped for it, and the pair is scored."""
    import json

    from proxy.dataplane.live import Snapshot
    from proxy.dataplane.read_bodies import ReadBodies
    from proxy.dataplane.request import Request
    from proxy.dataplane.shadow import ShadowSender
    from proxy.dataplane.upstream import UpstreamClient, UpstreamResponse
    from proxy.dataplane.upstream_form import UpstreamForms
    from proxy.metrics import Metrics
    from routing.config import parse_config
    from routing.operations import classify
    from tests.raw_upstream import RawUpstream, response

    def points(ids):
        return json.dumps({"result": {"points": [{"id": i, "score": 1.0} for i in ids]}, "status": "ok", "time": 0}).encode()

    async def green_answers(conn) -> None:
        while (request := await conn.read_request()) is not None:
            await conn.write(response(body=points([0, 1, 2, 9]) if b"/points/query" in request.request_line else b"{}"))

    class Pairs:
        def __init__(self):
            self.pairs = []

        def observe_pair(self, route, overlaps, green_empty, blue_empty):
            self.pairs.append((route, overlaps, green_empty, blue_empty))

    with RawUpstream(green_answers) as upstream:
        config = parse_config(
            f"upstream: {{url: '{upstream.url}'}}\nroutes:\n"
            "  docs: {blue: docs_v1, green: docs_v2, green_percent: 50, shadow: {sample: 1, k: 4}}\n"
        )
        snapshot, metrics, pairs = Snapshot.of(config, 1, "h"), Metrics(), Pairs()
        client = UpstreamClient(upstream.url, config.upstream)
        read_bodies = ReadBodies()
        sender = ShadowSender(client, metrics, pairs, UpstreamForms(None, read_bodies))
        body = b'{"query":[1],"lookup_from":{"collection":"docs"}}'
        request = Request("POST", b"/collections/docs/points/query", b"", {}, [], body, 0.0, snapshot, 0.0)
        request.canonical = request.path
        request.route = snapshot.table.lookup(b"docs")
        request.operation, request.kind = classify("POST", "points/query")
        request.upstream_seconds = 0.01

        async def run() -> None:
            sender.after_read(request, "blue", False, UpstreamResponse(200, [], points([0, 1, 2, 3])))
            await asyncio.gather(*sender._tasks)
            await client.close()

        asyncio.run(run())
        read_bodies.close()
    [shadowed] = [seen for seen in upstream.seen if b"/points/query" in seen.request_line]
    assert shadowed.request_line.startswith(b"POST /collections/docs_v2/points/query")
    assert json.loads(shadowed.body)["lookup_from"] == {"collection": "docs_v2"}
    assert pairs.pairs == [("docs", [0.75], False, False)]
    assert metric_value(metrics.exposition().decode(), "bluegreen_shadow_requests_total", route="docs", result="compared") == 1
