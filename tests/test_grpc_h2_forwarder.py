"""The design study's HTTP/2 forwarder (benchmarks/grpc_h2_forwarder.py) forwards what a real grpc client
and a real grpc.aio upstream exchange: bytes both ways, metadata, statuses and trailers, messages larger
than HTTP/2's flow-control windows, concurrent calls. A study tool, but its figures mean something only
if it does a forwarder's whole job for these calls."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc import aio

from benchmarks.grpc_h2_forwarder import start
from tests.support import free_port
from tests.test_grpc_transport import LoopThread

METHOD = "/qdrant.Points/Query"


async def _echo(request: bytes, context) -> bytes:
    """The request reversed, with the caller's `x-user-id` back as trailing metadata; `fail` aborts."""
    metadata = dict(context.invocation_metadata())
    context.set_trailing_metadata((("echo-user", metadata.get("x-user-id", "")),))
    if request == b"fail":
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such collection")
    return request[::-1]


@pytest.fixture(scope="module")
def forwarder():
    async def serve_upstream() -> tuple[aio.Server, int]:  # grpc.aio: made on the loop it serves on
        server = aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "qdrant.Points", {"Query": grpc.unary_unary_rpc_method_handler(_echo)}),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    loop = LoopThread()
    upstream, upstream_port = loop.run(serve_upstream())
    port = free_port()
    server = loop.run(start(port, upstream_port))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield channel.unary_unary(METHOD)
    channel.close()
    server.close()
    loop.run(upstream.stop(0))
    loop.close()


def test_bytes_metadata_and_trailers_both_ways(forwarder):
    answer, call = forwarder.with_call(b"\x00\x01abc", metadata=(("x-user-id", "alice"),), timeout=5)
    assert answer == b"cba\x01\x00"
    assert dict(call.initial_metadata())["x-bluegreen-color"] == "blue"
    assert dict(call.trailing_metadata())["echo-user"] == "alice"


def test_an_upstream_status_comes_back_with_its_message(forwarder):
    with pytest.raises(grpc.RpcError) as raised:
        forwarder(b"fail", timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND and raised.value.details() == "no such collection"


def test_messages_beyond_the_flow_control_windows_and_concurrent_calls(forwarder):
    large = bytes(range(256)) * 1200  # 300 KB each way: several windows of 64 KB
    assert forwarder(large, timeout=10) == large[::-1]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: forwarder(n.to_bytes(4, "big") * (n + 1) * 100, timeout=10), range(32)))
    assert answers == [(n.to_bytes(4, "big") * (n + 1) * 100)[::-1] for n in range(32)]
