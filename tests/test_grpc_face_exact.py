"""Issue 19, the gRPC face where exact bytes, metadata and faults matter: a proxy process in front of a
recording gRPC upstream (a grpc.aio server on a loop in a thread of the test process) that answers every
Qdrant method, fails calls on the collections named UNAVAILABLE and stalls those named SLOW."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import pytest
from grpc import aio
from qdrant_client import grpc as qgrpc

from proxy.grpc_schema import METHODS
from tests.support import RunningProxy, free_port, metric_value, route_yaml, wait_until
from tests.test_grpc_transport import UNKNOWN_FIELD, LoopThread
from tests.test_safety import FAST_GUARD

QUERY = "/qdrant.Points/Query"
BROKEN = "broken_green"  # the upstream answers UNAVAILABLE for it
SLOW = "slow_blue"  # the upstream takes 5 s for it
EMPTY = "empty_green"  # the upstream finds no points in it


@dataclass
class Seen:
    method: str
    request: bytes
    metadata: dict[str, str | bytes]
    time_remaining: float | None
    stalled: bool = False  # held by the upstream (SLOW) and not answered yet


@dataclass
class Upstream:
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    async def start(self) -> None:
        def behaviour(path: str):
            async def serve(request: bytes, context) -> bytes:
                name = getattr(METHODS[path].request.FromString(request), "collection_name", "")
                seen = Seen(path, request, dict(context.invocation_metadata()), context.time_remaining(), stalled=name == SLOW)
                self.seen.append(seen)
                if name == BROKEN:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "upstream broken")
                if name == SLOW:
                    await asyncio.sleep(5)
                    seen.stalled = False
                if path == QUERY:
                    points = [] if name == EMPTY else [qgrpc.ScoredPoint(id=qgrpc.PointId(num=len(name)), score=1.0)]
                    return qgrpc.QueryResponse(result=points,
                                               time=0.001).SerializeToString() + UNKNOWN_FIELD
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

    async def stop(self) -> None:
        await self.server.stop(0)


@pytest.fixture(scope="module")
def upstream():
    loop = LoopThread()
    server = Upstream()
    loop.run(server.start())
    yield server
    loop.run(server.stop())
    loop.close()


CLIENTS = """\
clients:
  api_keys:
    - {key: reader-key, access: r}
    - {key: writer-key, access: rw}
"""


class Face:
    def __init__(self, tmp_path, upstream: Upstream, routes: str, extra_yaml: str = "", upstream_options: str = ""):
        self.grpc_port = free_port()
        options = f"timeout: 10s, grpc_url: '127.0.0.1:{upstream.port}'" + (f", {upstream_options}" if upstream_options else "")
        self.proxy = RunningProxy(
            tmp_path / "proxy", f"http://127.0.0.1:{free_port()}", routes,
            extra_yaml=f"grpc: {{host: 127.0.0.1, port: {self.grpc_port}}}\n" + extra_yaml, upstream_options=options,
        )

    def __enter__(self) -> "Face":
        self.proxy.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.proxy.stop()

    def query(self, request: bytes, **options):
        return self.channel.unary_unary(QUERY).with_call(request, **options)


def query_request(collection: str, *extra: bytes) -> bytes:
    return qgrpc.QueryPoints(collection_name=collection, limit=3).SerializeToString() + b"".join(extra)


def test_bytes_as_sent_unless_a_name_changes_and_unknown_fields_survive(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", "docs_blue", "docs_green", 0)) as face:
        unrouted = query_request("plain", UNKNOWN_FIELD)
        answer, _ = face.query(unrouted, timeout=5)
        assert upstream.seen[-1].request == unrouted  # the client's own bytes
        assert answer.endswith(UNKNOWN_FIELD)  # the upstream's own bytes back
        routed = query_request("docs", UNKNOWN_FIELD)
        answer, call = face.query(routed, timeout=5)
        sent = upstream.seen[-1].request
        assert qgrpc.QueryPoints.FromString(sent).collection_name == "docs_blue"
        assert sent.endswith(UNKNOWN_FIELD)  # a field this schema lacks, kept through the rewrite
        assert dict(call.initial_metadata())["x-bluegreen-collection"] == "docs_blue"
        assert answer.endswith(UNKNOWN_FIELD)


def test_a_rewritten_name_is_the_only_change_in_place(tmp_path, upstream):
    """Only the name's bytes change: a field this schema lacks stays where the client put it (before the
    name here), and a write goes as sent but for its name."""
    with Face(tmp_path, upstream, route_yaml("docs", "docs_blue", "docs_green", 0)) as face:
        face.query(UNKNOWN_FIELD + query_request("docs"), timeout=5)
        assert upstream.seen[-1].request == UNKNOWN_FIELD + query_request("docs_blue")
        points = [qgrpc.PointStruct(id=qgrpc.PointId(num=n), vectors=qgrpc.Vectors(vector=qgrpc.Vector(data=[n / 3] * 8)))
                  for n in range(50)]
        upsert = qgrpc.UpsertPoints(collection_name="docs", wait=True, points=points).SerializeToString()
        face.channel.unary_unary("/qdrant.Points/Upsert")(upsert + UNKNOWN_FIELD, timeout=5)
        expected = qgrpc.UpsertPoints(collection_name="docs_blue", wait=True, points=points).SerializeToString()
        assert upstream.seen[-1].request == expected + UNKNOWN_FIELD


def test_the_colour_comes_back_while_the_upstream_is_still_answering(tmp_path, upstream):
    """The initial metadata goes out once the colour is decided, not after the upstream's answer: its
    own grpc.aio batch overlaps the upstream call instead of adding to every call's latency."""
    with Face(tmp_path, upstream, route_yaml("docs", SLOW, "docs_green", 0)) as face:
        before = len(upstream.seen)
        # Called as a stream (the same bytes on the wire): grpc's unary call reads metadata and answer in one batch.
        call = face.channel.unary_stream(QUERY)(query_request("docs"), timeout=8)
        assert dict(call.initial_metadata()) == {"x-bluegreen-color": "blue", "x-bluegreen-collection": SLOW}
        [sent] = wait_until(lambda: upstream.seen[before:], timeout=10)  # the colour may come before the upstream has the call
        assert sent.stalled  # and the upstream holds it 5 s: the colour came before its answer
        call.cancel()


def test_a_failed_green_read_fails_over_to_blue_and_the_guard_counts_it(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", "docs_blue", BROKEN, 100)) as face:
        answer, call = face.query(query_request("docs"), timeout=5)
        assert dict(call.initial_metadata())["x-bluegreen-color"] == "blue"
        assert [qgrpc.QueryPoints.FromString(s.request).collection_name for s in upstream.seen[-2:]] == [BROKEN, "docs_blue"]
        text = face.proxy.metrics_text()
        assert metric_value(text, "bluegreen_failovers_total", route="docs") == 1
        assert metric_value(text, "bluegreen_upstream_errors_total", route="docs", color="green", kind="connect") == 1
        # A forced colour never fails over: the client gets green's status as sent.
        face.proxy.write_routes(route_yaml("docs", "docs_blue", BROKEN, 100, allow_override="true"))
        deadline = time.monotonic() + 10  # until the reload applies
        while True:
            try:
                face.query(query_request("docs"), timeout=5, metadata=(("x-bluegreen-color", "green"),))
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    assert error.details() == "upstream broken"
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_failed_blue_read_names_its_colour_then_the_upstreams_status(tmp_path, upstream):
    """A blue read announces its colour while the upstream answers; a failure still arrives as Qdrant's status."""
    with Face(tmp_path, upstream, route_yaml("docs", BROKEN, "docs_green", 0)) as face:
        with pytest.raises(grpc.RpcError) as raised:
            face.query(query_request("docs"), timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE and raised.value.details() == "upstream broken"
        assert dict(raised.value.initial_metadata()) == {"x-bluegreen-color": "blue", "x-bluegreen-collection": BROKEN}


def test_the_clients_deadline_bounds_the_upstream_call(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", SLOW, "docs_green", 0)) as face:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as raised:
            face.query(query_request("docs"), timeout=0.5)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.5
        assert 0 < upstream.seen[-1].time_remaining <= 0.5


def test_overload_is_resource_exhausted_at_once(tmp_path, upstream):
    """Causal, not timed: the one slot is held by a call the upstream stalls for 5 s (its deadline 3 s),
    and the refusal arrives while that call is still held, so it cannot have waited for the slot."""
    with Face(tmp_path, upstream, route_yaml("docs", SLOW, "docs_green", 0), extra_yaml="limits: {max_concurrency: 1}\n") as face:
        with ThreadPoolExecutor(1) as pool:
            before = len(upstream.seen)
            slow = pool.submit(face.query, query_request("docs"), timeout=3)
            wait_until(lambda: any(seen.stalled for seen in upstream.seen[before:]), timeout=10)
            with pytest.raises(grpc.RpcError) as raised:
                face.query(query_request("plain"), timeout=3)
            assert not slow.done()
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limits.max_concurrency" in raised.value.details()
            with pytest.raises(grpc.RpcError):
                slow.result()


def test_max_message_size_is_limits_max_body_bytes(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", "b", "g", 0), extra_yaml="limits: {max_body_bytes: 2048}\n") as face:
        before = len(upstream.seen)
        with pytest.raises(grpc.RpcError) as raised:
            face.query(query_request("plain") + b"\x82\x3e\x90\x10" + b"x" * 2064, timeout=5)  # field 1000, 2064 bytes
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(upstream.seen) == before


def test_the_proxys_key_goes_upstream_never_the_clients(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", "docs_blue", "docs_green", 0), extra_yaml=CLIENTS,
              upstream_options="api_key: upstream-secret") as face:
        before = len(upstream.seen)
        for metadata in ((), (("api-key", "nobody"),), (("authorization", "Bearer nobody"),)):
            with pytest.raises(grpc.RpcError) as raised:
                face.query(query_request("docs"), timeout=5, metadata=metadata)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "credential" in raised.value.details() or "api key" in raised.value.details()
        assert len(upstream.seen) == before  # an unauthenticated call never reaches the upstream
        face.query(query_request("docs"), timeout=5, metadata=(("api-key", "reader-key"), ("x-user-id", "u1")))
        seen = upstream.seen[-1].metadata
        assert seen["api-key"] == "upstream-secret" and seen["x-user-id"] == "u1"
        with pytest.raises(grpc.RpcError) as raised:
            face.channel.unary_unary("/qdrant.Points/Upsert")(
                qgrpc.UpsertPoints(collection_name="docs").SerializeToString(), timeout=5, metadata=(("api-key", "reader-key"),))
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED and "may only read" in raised.value.details()


@pytest.mark.parametrize("green, reason", [(BROKEN, "error_rate"), (EMPTY, "empty_results")])
def test_the_guard_judges_grpc_reads(tmp_path, upstream, green, reason):
    """gRPC failures and empty answers are the guard's evidence, as REST's are: green rolls back."""
    routes = route_yaml("docs", "docs_blue", green, 50, guard=FAST_GUARD % "", failover="false")
    with Face(tmp_path, upstream, routes) as face:
        deadline = time.monotonic() + 20
        user = 0
        while face.proxy.admin_json()["routes"]["docs"]["state"] != "rolled_back":
            assert time.monotonic() < deadline, face.proxy.admin_json()["routes"]["docs"]
            for _ in range(40):
                user += 1
                try:
                    face.query(query_request("docs"), timeout=5, metadata=(("x-user-id", f"u{user}"),))
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.UNAVAILABLE  # green's own status: failover is off
        assert face.proxy.admin_json()["routes"]["docs"]["reason"] == reason
        _, call = face.query(query_request("docs"), timeout=5, metadata=(("x-user-id", "u1"),))
        assert dict(call.initial_metadata())["x-bluegreen-color"] == "blue"  # the rollback moves gRPC reads at once


def test_every_lookup_takes_its_own_routes_colour_for_the_same_key(tmp_path, upstream):
    routes = route_yaml("docs", "docs_blue", "docs_green", 100) + route_yaml("other", "other_blue", "other_green", 0)
    with Face(tmp_path, upstream, routes) as face:
        request = qgrpc.QueryPointGroups(
            collection_name="docs", group_by="g",
            lookup_from=qgrpc.LookupLocation(collection_name="other"),
            prefetch=[qgrpc.PrefetchQuery(prefetch=[qgrpc.PrefetchQuery(lookup_from=qgrpc.LookupLocation(collection_name="docs"))])],
            with_lookup=qgrpc.WithLookup(collection="other"),
        )
        face.channel.unary_unary("/qdrant.Points/QueryGroups")(request.SerializeToString() + UNKNOWN_FIELD, timeout=5)
        sent = qgrpc.QueryPointGroups.FromString(upstream.seen[-1].request)
        assert sent.collection_name == "docs_green"
        assert sent.lookup_from.collection_name == "other_blue" and sent.with_lookup.collection == "other_blue"
        assert sent.prefetch[0].prefetch[0].lookup_from.collection_name == "docs_green"
        assert upstream.seen[-1].request.endswith(UNKNOWN_FIELD)


def test_a_scoped_key_reads_its_collections_only_lookups_included(tmp_path, upstream):
    extra = "clients:\n  api_keys:\n    - {key: docs-reader, access: r, collections: [docs]}\n"
    routes = route_yaml("docs", "docs_blue", "docs_green", 0) + route_yaml("other", "other_blue", "other_green", 0)
    with Face(tmp_path, upstream, routes, extra_yaml=extra) as face:
        key = (("api-key", "docs-reader"),)
        face.query(query_request("docs"), timeout=5, metadata=key)
        assert upstream.seen[-1].metadata.get("api-key") is None  # no upstream.api_key: no credential at all
        before = len(upstream.seen)
        for request in (query_request("other"), qgrpc.QueryPoints(
                collection_name="docs", lookup_from=qgrpc.LookupLocation(collection_name="other")).SerializeToString()):
            with pytest.raises(grpc.RpcError) as raised:
                face.query(request, timeout=5, metadata=key)
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED and "`other`" in raised.value.details()
        assert len(upstream.seen) == before
