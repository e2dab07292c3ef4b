"""Shadow reads over gRPC: a sampled read on a route with `shadow` also goes to the other colour once the
client's call has ended, counted and scored as over REST (proxy.dataplane.shadow).

In process: the gRPC face (proxy.dataplane.grpc_face) on a loop in a thread of the test process, in front
of a recording gRPC upstream on the same loop that answers every search with fixed points, holds the
calls on the collections a test names until it lets them go (an event, not a timer) and fails the ones
named BROKEN; the real qdrant-client (prefer_grpc=True) or raw calls over loopback. Then end to end: a
proxy process in front of the embedded upstream's gRPC face.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

import grpc
import pytest
from grpc import aio
from qdrant_client import grpc as qgrpc
from qdrant_client import models

from proxy.dataplane.grpc_face import GrpcFace
from proxy.dataplane.live import LiveConfig
from proxy.dataplane.read_bodies import ReadBodies
from proxy.dataplane.shadow import ShadowSender
from proxy.dataplane.upstream import UpstreamClient
from proxy.dataplane.upstream_form import UpstreamForms
from proxy.grpc_schema import METHODS
from proxy.metrics import Metrics
from routing.config import Grpc, parse_config
from routing.table import bucket
from tests.support import free_port, metric_value, qdrant_grpc_client, route_yaml, wait_until
from tests.test_grpc_transport import LoopThread

BROKEN = "broken_green"  # the upstream answers UNAVAILABLE for it
VECTOR = [1.0, 0.2, 0.1, 0.0]
RESULTS = ("compared", "skipped", "dropped", "error")


@dataclass
class Seen:
    method: str
    request: object  # the parsed request message
    metadata: dict[str, str | bytes]


@dataclass
class SearchUpstream:
    """Answers Query and QueryBatch with `points` (ids) for every collection; holds the calls on the
    collections in `held` until `release`; UNAVAILABLE for BROKEN."""

    loop: LoopThread
    points: list[int] = field(default_factory=lambda: [1, 2, 3])
    seen: list[Seen] = field(default_factory=list)
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    waiting: dict[str, int] = field(default_factory=dict)
    port: int = 0

    async def start(self) -> None:
        def behaviour(path: str):
            async def serve(request: bytes, context) -> bytes:
                message = METHODS[path].request.FromString(request)
                self.seen.append(Seen(path, message, dict(context.invocation_metadata())))
                name = getattr(message, "collection_name", "")
                if name == BROKEN:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream broken")
                if name in self.held:
                    self.waiting[name] = self.waiting.get(name, 0) + 1
                    await self.held[name].wait()
                scored = [qgrpc.ScoredPoint(id=qgrpc.PointId(num=i), score=1.0 - i / 100) for i in self.points]
                if path == "/qdrant.Points/Query":
                    return qgrpc.QueryResponse(result=scored).SerializeToString()
                if path == "/qdrant.Points/QueryBatch":
                    batch = [qgrpc.BatchResult(result=scored) for _ in message.query_points]
                    return qgrpc.QueryBatchResponse(result=batch).SerializeToString()
                return b""
            return grpc.unary_unary_rpc_method_handler(serve)

        services: dict[str, dict] = {}
        for path in METHODS:
            service, method = path[1:].split("/")
            services.setdefault(service, {})[method] = behaviour(path)
        self.server = aio.server()
        self.server.add_generic_rpc_handlers(tuple(grpc.method_handlers_generic_handler(s, h) for s, h in services.items()))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    def hold(self, collection: str) -> None:
        async def add() -> None:
            self.held[collection] = asyncio.Event()
        self.loop.run(add())

    def release(self, collection: str) -> None:
        async def let_go() -> None:
            self.held.pop(collection).set()
        self.loop.run(let_go())

    def collections(self, method: str = "/qdrant.Points/Query") -> list[str]:
        return [seen.request.collection_name for seen in self.seen if seen.method == method]


class Exchanges:
    """The observer the face reports to (the rollout guard in the proxy): every routed exchange, every pair."""

    def __init__(self):
        self.exchanges: list[tuple[str, str, str]] = []  # (route, colour, operation)
        self.pairs: list[tuple[str, list[float], bool | None, bool | None]] = []

    def observe(self, route, colour, operation, response, seconds) -> None:
        self.exchanges.append((route, colour, operation))

    def observe_pair(self, route, overlaps, green_empty, blue_empty) -> None:
        self.pairs.append((route, overlaps, green_empty, blue_empty))


ROUTES = (
    route_yaml("docs", "docs_blue", "docs_green", 0, shadow="{sample: 1.0, k: 10}")
    + route_yaml("other", "other_blue", "other_green", 100)  # only named in lookups
    + route_yaml("capped", "capped_blue", "capped_green", 0, shadow="{sample: 1.0, max_inflight: 2}")
    + route_yaml("down", "down_blue", BROKEN, 0, shadow="{sample: 1.0}")
    + route_yaml("forced", "forced_blue", "forced_green", 0, shadow="{sample: 1.0}", allow_override="true")
    + route_yaml("unanswered", BROKEN, "unanswered_green", 0, shadow="{sample: 1.0}")
    + route_yaml("quiet", "quiet_blue", "quiet_green", 0, shadow="{sample: 0}")
)


class InProcessFace:
    def __init__(self):
        self.loop = LoopThread()
        self.upstream = SearchUpstream(self.loop)
        self.loop.run(self.upstream.start())
        # No REST upstream answers here: the vector sizes are unknown, so every request counts as fitting.
        config = parse_config(f"upstream: {{url: 'http://127.0.0.1:{free_port()}', timeout: 10s}}\nroutes:\n{ROUTES}")
        self.metrics, self.observer = Metrics(), Exchanges()
        self.rest = UpstreamClient(config.upstream.url, config.upstream)
        self.read_bodies = ReadBodies()
        self.shadow = ShadowSender(self.rest, self.metrics, self.observer, UpstreamForms(None, self.read_bodies))
        self.face = GrpcFace(
            LiveConfig.initial(config, "h", "/x"), self.metrics, self.observer, config.upstream,
            f"127.0.0.1:{self.upstream.port}", Grpc(host="127.0.0.1", port=0), shadow=self.shadow,
        )
        self.port = self.loop.run(self.face.start())
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.channel.close()
        self.loop.run(self.face.stop(0))
        self.loop.run(self.shadow.close())
        self.loop.run(self.rest.close())
        self.loop.run(self.upstream.server.stop(0))
        self.read_bodies.close()
        self.loop.close()

    def client(self, **options):
        return qdrant_grpc_client(f"http://127.0.0.1:{free_port()}", self.port, timeout=10, **options)

    def query(self, collection: str, **options):
        request = qgrpc.QueryPoints(collection_name=collection, query=qgrpc.Query(
            nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=VECTOR))), limit=3)
        return qgrpc.PointsStub(self.channel).Query.with_call(request, timeout=10, **options)

    def shadows(self, route: str) -> dict[str, float]:
        text = self.metrics.exposition().decode()
        return {result: metric_value(text, "bluegreen_shadow_requests_total", route=route, result=result) for result in RESULTS}

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics.exposition().decode(), name, **labels)


@pytest.fixture(scope="module")
def face():
    running = InProcessFace()
    yield running
    running.close()


def test_the_shadow_goes_in_the_other_colours_form_after_the_client_has_its_answer(face):
    """Causal, not timed: every client answer arrives while every shadow is still held at green."""
    upstream = face.upstream
    upstream.hold("docs_green")
    before = len(upstream.seen)
    client = face.client(headers={"x-user-id": "reader-1"})
    try:
        for _ in range(20):
            answer = client.query_points(
                "docs", query=VECTOR, limit=3, lookup_from=models.LookupLocation(collection="other"),
                prefetch=[models.Prefetch(query=VECTOR, lookup_from=models.LookupLocation(collection="docs"))],
            )
            assert [point.id for point in answer.points] == [1, 2, 3]
    finally:
        client.close()
    wait_until(lambda: upstream.waiting.get("docs_green") == 20, timeout=15)  # all 20 shadows sent, none answered
    assert face.shadows("docs") == {"compared": 0, "skipped": 0, "dropped": 0, "error": 0}
    upstream.release("docs_green")
    wait_until(lambda: face.shadows("docs")["compared"] == 20, timeout=15)

    sent = upstream.seen[before:]
    answered = [seen.request for seen in sent if seen.request.collection_name == "docs_blue"]
    shadowed = [seen.request for seen in sent if seen.request.collection_name == "docs_green"]
    assert len(answered) == len(shadowed) == 20
    # Each colour's own names: the route's lookups its own colour, another route's lookup that route's
    # decision for the same key (`other` is all green), whichever colour was built first.
    for request, colour in ((answered[0], "blue"), (shadowed[0], "green")):
        assert request.lookup_from.collection_name == "other_green"
        assert request.prefetch[0].lookup_from.collection_name == f"docs_{colour}"
    # The client's own metadata, as the answered call carried it.
    assert {seen.metadata.get("x-user-id") for seen in sent} == {"reader-1"}
    # Full agreement; shadow exchanges are not client requests, and feed no per-colour guard window.
    assert face.metric("bluegreen_shadow_overlap_sum", route="docs") == face.metric("bluegreen_shadow_overlap_count", route="docs") == 20
    assert face.metric("bluegreen_shadow_rbo_sum", route="docs") == pytest.approx(20)
    assert face.metric("bluegreen_shadow_latency_ratio_count", route="docs") == 20
    assert face.metric("bluegreen_requests_total", route="docs", protocol="grpc") == 20
    assert face.metric("bluegreen_requests_total", route="docs", color="green") == 0
    assert [exchange for exchange in face.observer.exchanges if exchange[0] == "docs"] == [("docs", "blue", "query")] * 20
    assert [pair for pair in face.observer.pairs if pair[0] == "docs"] == [("docs", [1.0], False, False)] * 20


def test_max_inflight_drops_and_counts(face):
    upstream = face.upstream
    upstream.hold("capped_green")
    for _ in range(6):
        answer, _ = face.query("capped")
        assert len(answer.result) == 3
    wait_until(lambda: face.shadows("capped")["dropped"] == 4, timeout=15)
    assert upstream.waiting.get("capped_green") == 2
    upstream.release("capped_green")
    wait_until(lambda: face.shadows("capped")["compared"] == 2, timeout=15)
    assert face.shadows("capped") == {"compared": 2, "skipped": 0, "dropped": 4, "error": 0}


def test_a_green_that_is_down_is_an_error_and_the_client_gets_blues_answer(face):
    client = face.client(headers={"x-user-id": "reader-2"})
    try:
        for _ in range(5):
            assert [point.id for point in client.query_points("down", query=VECTOR, limit=3).points] == [1, 2, 3]
        # A batch too: one answer per sub-request, compared as a whole.
        batch = client.query_batch_points("down", [models.QueryRequest(query=VECTOR, limit=3)] * 2)
        assert [[point.id for point in answer.points] for answer in batch] == [[1, 2, 3], [1, 2, 3]]
    finally:
        client.close()
    wait_until(lambda: face.shadows("down")["error"] == 6, timeout=15)
    assert face.shadows("down") == {"compared": 0, "skipped": 0, "dropped": 0, "error": 6}
    assert face.metric("bluegreen_requests_total", route="down", color="blue") == 6
    assert face.metric("bluegreen_requests_total", route="down", color="green") == 0
    assert face.metric("bluegreen_upstream_errors_total", route="down") == 0  # green's failures were the shadow's
    assert {exchange[1] for exchange in face.observer.exchanges if exchange[0] == "down"} == {"blue"}


def test_forced_unanswered_and_unsampled_reads(face):
    upstream = face.upstream
    _, call = face.query("forced", metadata=(("x-bluegreen-color", "green"),))
    assert dict(call.initial_metadata())["x-bluegreen-color"] == "green"
    with pytest.raises(grpc.RpcError) as raised:  # blue failed: nothing to compare, green not asked
        face.query("unanswered")
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    before = len(upstream.seen)
    face.query("quiet")
    wait_until(lambda: face.shadows("forced")["skipped"] == 1 and face.shadows("unanswered")["skipped"] == 1, timeout=15)
    assert face.shadows("forced") == face.shadows("unanswered") == {"compared": 0, "skipped": 1, "dropped": 0, "error": 0}
    assert face.shadows("quiet") == {"compared": 0, "skipped": 0, "dropped": 0, "error": 0}
    assert "forced_blue" not in upstream.collections() and "unanswered_green" not in upstream.collections()
    assert [seen.request.collection_name for seen in upstream.seen[before:]] == ["quiet_blue"]  # sample 0: no shadow


# ---------------------------------------------------------------- end to end: a proxy process, the embedded upstream's gRPC face


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """(REST URL, gRPC port) of an embedded upstream serving both."""
    from tests.support import start_embedded_upstream

    grpc_port = free_port()
    server, url = start_embedded_upstream(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"), grpc_port=grpc_port)
    yield url, grpc_port
    server.stop()


def grpc_shadows(proxy, route: str) -> dict[str, float]:
    text = proxy.metrics_text()
    return {result: metric_value(text, "bluegreen_shadow_requests_total", route=route, result=result) for result in RESULTS}


@pytest.mark.slow  # two processes
def test_the_same_points_on_both_colours_compare_in_full(tmp_path, embedded):
    from tests.test_grpc_face import Face, fill

    tag = uuid.uuid4().hex[:8]
    blue, green, other_size = f"b_{tag}", f"g_{tag}", f"s_{tag}"
    direct = qdrant_grpc_client(embedded[0], embedded[1], timeout=30)
    fill(direct, blue)
    fill(direct, green)
    direct.create_collection(other_size, vectors_config=models.VectorParams(size=3, distance=models.Distance.COSINE))
    direct.close()
    routes = (
        route_yaml("docs", blue, green, 50, shadow="{sample: 1.0}")
        + route_yaml("model", blue, other_size, 0, shadow="{sample: 1.0}")  # a raw 4-dim vector cannot go to green
    )
    with Face(tmp_path, embedded, routes) as face:
        colours = set()
        for user in [f"user-{i}" for i in range(6)]:
            client = face.client(headers={"x-user-id": user})
            try:
                assert len(client.query_points("docs", query=VECTOR, limit=3).points) == 3
                batch = client.query_batch_points("docs", [models.QueryRequest(query=VECTOR, limit=2)] * 2)
                assert [len(answer.points) for answer in batch] == [2, 2]
                groups = client.query_points_groups("docs", group_by="n", query=VECTOR, limit=3, group_size=1)
                assert len(groups.groups) == 3
                assert len(client.query_points("model", query=VECTOR, limit=3).points) == 3
            finally:
                client.close()
            colours.add("green" if bucket(b"docs", user.encode()) < 5000 else "blue")  # the split at 50 %
        wait_until(lambda: grpc_shadows(face.proxy, "docs")["compared"] == 18, timeout=15)
        wait_until(lambda: grpc_shadows(face.proxy, "model")["skipped"] == 6, timeout=15)
        text = face.proxy.metrics_text()
        assert grpc_shadows(face.proxy, "docs") == {"compared": 18, "skipped": 0, "dropped": 0, "error": 0}
        assert grpc_shadows(face.proxy, "model") == {"compared": 0, "skipped": 6, "dropped": 0, "error": 0}
        count = metric_value(text, "bluegreen_shadow_overlap_count", route="docs")
        assert count == 6 * (1 + 2 + 1)  # one score per sub-request
        assert metric_value(text, "bluegreen_shadow_overlap_sum", route="docs") == count
        assert metric_value(text, "bluegreen_shadow_rbo_sum", route="docs") == pytest.approx(count)
        assert metric_value(text, "bluegreen_requests_total", route="docs") == 18  # the clients' calls only
        assert colours == {"blue", "green"}  # both colours answered, so shadows went both ways


@pytest.mark.slow  # guard windows over real seconds
def test_different_points_trip_the_overlap_rule(tmp_path, embedded):
    """test_shadow's crafted colours (overlap@10 exactly 0.7 for every query), read over gRPC only."""
    from tests.test_grpc_face import Face
    from tests.test_shadow import DIM, FAST_GUARD, QUERY, crafted

    tag = uuid.uuid4().hex[:8]
    blue, green = f"b_{tag}", f"g_{tag}"
    crafted(embedded[0], blue, green)
    guard = FAST_GUARD % ", min_overlap: 0.9, overlap_for: 600ms"
    with Face(tmp_path, embedded, route_yaml("docs", blue, green, 50, shadow="{sample: 1.0}", guard=guard)) as face:
        request = qgrpc.QueryPoints(collection_name="docs", limit=10, query=qgrpc.Query(
            nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=QUERY))))
        assert len(QUERY) == DIM
        deadline, batch = time.monotonic() + 30, 0
        while time.monotonic() < deadline and face.proxy.admin_json()["routes"]["docs"]["state"] != "rolled_back":
            for i in range(60):
                assert len(face.points.Query(request, metadata=[("x-user-id", f"u{batch}-{i}")], timeout=10).result) == 10
            batch += 1
        status = face.proxy.admin_json()["routes"]["docs"]
        assert (status["state"], status["reason"]) == ("rolled_back", "overlap"), status
        assert status["figures"]["mean_overlap"] == pytest.approx(0.7) and status["figures"]["comparisons"] >= 20
        text = face.proxy.metrics_text()
        assert metric_value(text, "bluegreen_rollbacks_total", route="docs", reason="overlap") == 1
        assert metric_value(text, "bluegreen_shadow_overlap_sum", route="docs") / metric_value(
            text, "bluegreen_shadow_overlap_count", route="docs") == pytest.approx(0.7)
