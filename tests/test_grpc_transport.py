"""proxy.dataplane.grpc_transport: real gRPC clients -> the forwarder -> a recording gRPC upstream, over loopback sockets.

The upstream and the forwarder each run a grpc.aio server on their own event loop in a thread of
the test process (the forwarder on uvloop, as in the proxy); clients are grpcio channels and
qdrant-client with `prefer_grpc=True`.
"""
from __future__ import annotations

import ast
import asyncio
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import grpc
import pytest
import uvloop
from grpc import aio
from qdrant_client import QdrantClient
from qdrant_client import grpc as qgrpc

from proxy.dataplane.grpc_io import INLINE_IO
from proxy.dataplane.grpc_transport import GrpcCallError, GrpcForwarder
from tests.support import REPO_ROOT, free_port

QUERY = "/qdrant.Points/Query"
COUNT = "/qdrant.Points/Count"  # the upstream answers NOT_FOUND with a message and trailing metadata
SEARCH = "/qdrant.Points/Search"  # the upstream never answers (until cancelled): for deadlines
METHODS = (QUERY, COUNT, SEARCH)
# Field 1000 (varint 7): known to no schema; protobuf parsers keep it, a raw forwarder must too.
UNKNOWN_FIELD = b"\xc0\x3e\x07"
NOT_FOUND_MESSAGE = "Not found: Collection `nope` doesn't exist!"


def query_answer() -> bytes:
    points = [qgrpc.ScoredPoint(id=qgrpc.PointId(num=n), score=1.0 - n / 100, version=1,
                                payload={"title": qgrpc.Value(string_value=f"doc {n}")}) for n in range(10)]
    return qgrpc.QueryResponse(result=points, time=0.002).SerializeToString() + UNKNOWN_FIELD


def query_request(collection: str = "docs") -> bytes:
    return qgrpc.QueryPoints(
        collection_name=collection, limit=10,
        query=qgrpc.Query(nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=[0.1, 0.2, 0.3, 0.4]))),
    ).SerializeToString()


class LoopThread:
    """An event loop running in a daemon thread; `run(coro)` waits for the coroutine's result."""

    def __init__(self, new_loop=asyncio.new_event_loop):
        self.loop = new_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class Seen:
    method: str
    request: bytes
    metadata: dict[str, str | bytes]
    time_remaining: float | None


@dataclass
class RecordingUpstream:
    """A gRPC upstream that records what reached it: the fixed answer for Query, an error for Count, a slow Search."""

    seen: list[Seen] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    search_cancelled: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    async def start(self) -> None:
        async def query(request: bytes, context) -> bytes:
            self._record(QUERY, request, context)
            return query_answer()

        async def count(request: bytes, context) -> bytes:
            self._record(COUNT, request, context)
            context.set_trailing_metadata((("x-qdrant-detail", "collection missing"),))
            await context.abort(grpc.StatusCode.NOT_FOUND, NOT_FOUND_MESSAGE)

        async def search(request: bytes, context) -> bytes:
            self._record(SEARCH, request, context)
            try:
                await asyncio.Event().wait()  # never set: only a cancellation ends this call
            except asyncio.CancelledError:
                self.cancelled.append(SEARCH)  # the forwarder's upstream call ended with its caller's deadline
                self.search_cancelled.set()
                raise
            return b""

        behaviours = {QUERY: query, COUNT: count, SEARCH: search}
        self.server = aio.server()
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("qdrant.Points", {
            path.rsplit("/", 1)[1]: grpc.unary_unary_rpc_method_handler(behaviour) for path, behaviour in behaviours.items()
        }),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()

    def _record(self, method: str, request: bytes, context) -> None:
        self.seen.append(Seen(method, request, dict(context.invocation_metadata()), context.time_remaining()))

    async def stop(self) -> None:
        await self.server.stop(0)


@pytest.fixture(scope="module")
def upstream():
    loop = LoopThread()
    server = RecordingUpstream()
    loop.run(server.start())
    yield server
    loop.run(server.stop())
    loop.close()


@pytest.fixture(scope="module")
def proxy_loop():
    loop = LoopThread(uvloop.new_event_loop)
    yield loop
    loop.close()


@pytest.fixture
def start_forwarder(proxy_loop):
    started: list[GrpcForwarder] = []

    def start(forwarder: GrpcForwarder) -> grpc.Channel:
        proxy_loop.run(forwarder.start())
        started.append(forwarder)
        channel = grpc.insecure_channel(f"127.0.0.1:{forwarder.port}")
        channels.append(channel)
        return channel

    channels: list[grpc.Channel] = []
    yield start
    for channel in channels:
        channel.close()
    for forwarder in started:
        proxy_loop.run(forwarder.stop(0))


@pytest.fixture
def channel(upstream, start_forwarder) -> grpc.Channel:
    return start_forwarder(GrpcForwarder(f"127.0.0.1:{upstream.port}", METHODS))


def test_request_and_answer_bytes_forwarded_byte_for_byte(upstream, channel):
    request = query_request() + UNKNOWN_FIELD  # a field a newer client might send
    answer = channel.unary_unary(QUERY)(request, timeout=5)
    assert upstream.seen[-1].method == QUERY
    assert upstream.seen[-1].request == request
    assert answer == query_answer()  # the upstream's unknown field included


def test_upstream_status_message_and_trailing_metadata_reach_the_client(channel):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(COUNT)(query_request("nope"), timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == NOT_FOUND_MESSAGE
    assert ("x-qdrant-detail", "collection missing") in tuple(raised.value.trailing_metadata())


@pytest.mark.slow  # waits out a 3 s deadline
def test_deadline_bounds_the_upstream_call(upstream, channel):
    # Causal, not timed: the upstream never answers, so only the deadline can end the call; the client's
    # deadline is long enough that the request reaches the upstream on a loaded machine too.
    upstream.search_cancelled.clear()
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(SEARCH)(b"", timeout=3)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # the client's deadline travels on (grpc rounds a deadline up by a few ms as it writes it on the wire)
    assert upstream.seen[-1].method == SEARCH and 0 < upstream.seen[-1].time_remaining <= 3.05
    # the upstream call did not outlive the client's deadline: the forwarder cancelled it
    assert upstream.search_cancelled.wait(30)
    assert SEARCH in upstream.cancelled


def test_no_deadline_forwards_none(upstream, channel):
    channel.unary_unary(QUERY)(query_request())
    assert upstream.seen[-1].time_remaining is None


def test_selected_metadata_forwarded_others_not(upstream, channel):
    metadata = (("x-user-id", "u-42"), ("api-key", "secret-key"), ("x-internal", "no"), ("trace-bin", b"\x00\x01"))
    channel.unary_unary(QUERY)(query_request(), timeout=5, metadata=metadata)
    seen = upstream.seen[-1].metadata
    assert seen["x-user-id"] == "u-42" and seen["api-key"] == "secret-key"
    assert "x-internal" not in seen and "trace-bin" not in seen


def test_binary_metadata_forwarded_when_selected(upstream, start_forwarder):
    channel = start_forwarder(GrpcForwarder(f"127.0.0.1:{upstream.port}", METHODS, forward_metadata=("trace-bin",)))
    channel.unary_unary(QUERY)(query_request(), timeout=5, metadata=(("trace-bin", b"\x00\xff\x01"),))
    assert upstream.seen[-1].metadata["trace-bin"] == b"\x00\xff\x01"


def test_upstream_down_is_unavailable(start_forwarder):
    channel = start_forwarder(GrpcForwarder(f"127.0.0.1:{free_port()}", METHODS))  # nothing listens there
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(QUERY)(query_request(), timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert raised.value.details()  # says why
    assert time.monotonic() - started < 5  # fails fast rather than waiting out the deadline


def test_unknown_method_is_unimplemented(channel):
    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary("/qdrant.Points/NoSuchMethod")(b"", timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_qdrant_client_over_grpc(upstream, start_forwarder):
    forwarder = GrpcForwarder(f"127.0.0.1:{upstream.port}", METHODS)
    start_forwarder(forwarder)
    client = QdrantClient(host="127.0.0.1", grpc_port=forwarder.port, prefer_grpc=True, check_compatibility=False,
                          headers={"x-user-id": "u-7"})
    try:
        result = client.query_points("docs", query=[0.1, 0.2, 0.3, 0.4], limit=10)
    finally:
        client.close()
    assert [point.id for point in result.points] == list(range(10))
    assert upstream.seen[-1].metadata["x-user-id"] == "u-7"
    assert qgrpc.QueryPoints.FromString(upstream.seen[-1].request).collection_name == "docs"


class Router(GrpcForwarder):
    """The hook as a router uses it: refuse one collection, rewrite another's name, fail on a third."""

    async def handle(self, method, request, metadata, timeout):
        query = qgrpc.QueryPoints.FromString(request)
        if query.collection_name == "secret":
            raise GrpcCallError(grpc.StatusCode.PERMISSION_DENIED, "collection `secret` is not routed")
        if query.collection_name == "broken":
            raise KeyError("a router bug")
        if query.collection_name == "docs":
            query.collection_name = "docs_blue"
            request = query.SerializeToString()
        return await self.forward(method, request, metadata, timeout)


def test_handle_hook_routes_refuses_and_survives_its_own_bugs(upstream, start_forwarder):
    channel = start_forwarder(Router(f"127.0.0.1:{upstream.port}", METHODS))
    query = channel.unary_unary(QUERY)
    assert query(query_request("docs"), timeout=5) == query_answer()
    assert qgrpc.QueryPoints.FromString(upstream.seen[-1].request).collection_name == "docs_blue"
    with pytest.raises(grpc.RpcError) as refused:
        query(query_request("secret"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "collection `secret` is not routed"
    with pytest.raises(grpc.RpcError) as failed:
        query(query_request("broken"), timeout=5)
    assert failed.value.code() == grpc.StatusCode.INTERNAL and "KeyError" in failed.value.details()
    assert query(query_request("docs"), timeout=5) == query_answer()  # still serving


def _grpc_experiments_in_child(code: str, env: dict[str, str]) -> str | None:
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"} | env
    completed = subprocess.run([sys.executable, "-c", code + "; import os; print(repr(os.environ.get('GRPC_EXPERIMENTS')))"],
                               cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60, check=True)
    return ast.literal_eval(completed.stdout.strip().splitlines()[-1])  # the repr of a str or None


def test_inline_io_chosen_before_grpc_loads_and_an_operators_choice_kept():
    assert _grpc_experiments_in_child("import proxy.dataplane.grpc_transport", {}) == INLINE_IO
    assert _grpc_experiments_in_child("import proxy.dataplane.grpc_transport", {"GRPC_EXPERIMENTS": ""}) == ""
    # grpc already loaded: its core has read the environment, so the transport leaves it alone.
    assert _grpc_experiments_in_child("import grpc, proxy.dataplane.grpc_transport", {}) is None


def test_the_proxy_process_loads_grpc_with_inline_io():
    """The gRPC face and the server wiring import grpc only after the transport has chosen the I/O mode
    (the face once imported grpc first, and the proxy ran on EventEngine I/O: ~20 % more CPU per call)."""
    assert _grpc_experiments_in_child("import proxy.dataplane.grpc_face", {}) == INLINE_IO
    assert _grpc_experiments_in_child("import proxy.server", {}) == INLINE_IO


@pytest.mark.slow  # this module again, in a child pytest
@pytest.mark.skipif(os.environ.get("GRPC_EXPERIMENTS") == INLINE_IO, reason="this run is the inline-I/O one")
def test_the_same_behaviour_under_inline_io():
    """In a test session grpc is loaded before the transport, so the tests above ran with grpc's
    EventEngine I/O; the proxy process runs with INLINE_IO. Run them again that way."""
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
        cwd=REPO_ROOT, env={**os.environ, "GRPC_EXPERIMENTS": INLINE_IO}, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]
    assert " passed" in completed.stdout and "1 skipped" in completed.stdout
