"""A stand-in for the proxy's gRPC face under test: `python -m benchmarks.grpc_proxy --upstream-port U --port P`.

Runs `proxy.dataplane.grpc_transport.GrpcForwarder` for `/qdrant.Points/Query` the way the proxy process will:
on uvloop, beside a uvicorn REST listener on the same event loop (`--rest-port`, which also answers
`/healthz` for readiness). The options are the design study's variants (benchmarks/grpc-design.md).
"""
from __future__ import annotations

import argparse
import asyncio
import os

# First: the transport sets grpc core's I/O mode before anything imports grpc.
from proxy.dataplane.grpc_transport import UPSTREAM_CHANNEL_OPTIONS, GrpcForwarder  # isort: skip
from benchmarks.grpc_upstream import QUERY_METHOD

# Channel options tried in the study, by name: each is added to the transport's own.
CHANNEL_VARIANTS: dict[str, tuple[tuple[str, object], ...]] = {
    "default": (),
    "no-compression": (("grpc.default_compression_algorithm", 0),),
    "latency": (("grpc.optimization_target", "latency"),),
    "throughput": (("grpc.optimization_target", "throughput"),),
    "minimal-stack": (("grpc.minimal_stack", 1),),
    "no-bdp": (("grpc.http2.bdp_probe", 0),),
}


async def health_app(scope, receive, send):
    """The REST listener's stand-in: `GET /healthz` answers ok (readiness), everything else 404."""
    if scope["type"] != "http":
        return
    ok = scope["path"] == "/healthz"
    await send({"type": "http.response.start", "status": 200 if ok else 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok" if ok else b"not found"})


_HTTP1_ANSWER = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 77\r\nconnection: close\r\n\r\n"
    b'{"status":{"error":"this port speaks gRPC; REST is on port 6333"},"time":0.0}'
)


class _FrontRelay(asyncio.Protocol):
    """The `--front-relay` study (issue 19 item 6): an asyncio listener of our own in front of grpc core,
    which alone could see a connection's first bytes and answer HTTP/1.1 in HTTP/1.1. grpcio cannot
    take over an accepted socket, so an HTTP/2 connection is relayed byte by byte to the gRPC listener
    behind it: the hop whose per-call cost this measures."""

    def __init__(self, backend_port: int):
        self.backend_port = backend_port
        self.backend: asyncio.Transport | None = None
        self.pending: list[bytes] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.backend is not None:
            self.backend.write(data)
        elif self.pending is not None:
            self.pending.append(data)
        elif data.startswith(b"PRI"):
            self.pending = [data]
            asyncio.get_running_loop().create_task(self._connect())
        else:
            self.transport.write(_HTTP1_ANSWER)
            self.transport.close()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(lambda: _BackRelay(self.transport), "127.0.0.1", self.backend_port)
        transport.write(b"".join(self.pending))
        self.backend, self.pending = transport, None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None:
            self.backend.close()


class _BackRelay(asyncio.Protocol):
    def __init__(self, front: asyncio.Transport):
        self.front = front

    def data_received(self, data: bytes) -> None:
        self.front.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.front.close()


async def serve_rest(port: int) -> None:
    """The REST listener beside the gRPC one, until the process is stopped; port 0: none, only wait."""
    if not port:
        await asyncio.Event().wait()  # the gRPC face alone: the variant without a REST listener beside it
    import uvicorn

    rest = uvicorn.Server(uvicorn.Config(health_app, host="127.0.0.1", port=port, lifespan="off",
                                         access_log=False, log_level="warning"))
    await rest.serve()


async def serve(args: argparse.Namespace) -> None:
    if args.h2_forwarder:  # no grpcio at all on this side: an HTTP/2 layer of our own (the study's open question)
        from benchmarks.grpc_h2_forwarder import start

        await start(args.port, args.upstream_port)
        await serve_rest(args.rest_port)
        return
    options = UPSTREAM_CHANNEL_OPTIONS + CHANNEL_VARIANTS[args.channel_options]
    grpc_port = 0 if args.front_relay else args.port
    forwarder = GrpcForwarder(
        f"127.0.0.1:{args.upstream_port}", [QUERY_METHOD], port=grpc_port, channel_options=options,
        **({"channels": args.channels} if args.channels else {}),
    )
    if args.grpc_thread:  # the gRPC face on its own loop in a thread: REST's loop never runs gRPC work
        import threading

        import uvloop

        grpc_loop = uvloop.new_event_loop()
        threading.Thread(target=grpc_loop.run_forever, daemon=True).start()
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(forwarder.start(), grpc_loop))
    else:
        await forwarder.start()
    if args.front_relay:
        await asyncio.get_running_loop().create_server(lambda: _FrontRelay(forwarder.port), "127.0.0.1", args.port)
    try:
        await serve_rest(args.rest_port)
    finally:
        if args.grpc_thread:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(forwarder.stop(1), grpc_loop))
        else:
            await forwarder.stop(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grpc_proxy", description=__doc__.splitlines()[0])
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--port", type=int, required=True, help="the gRPC listener")
    parser.add_argument("--rest-port", type=int, required=True, help="the REST listener on the same loop; 0: none")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--channels", type=int, help="upstream channels, round robin per call (default: the transport's)")
    parser.add_argument("--grpc-thread", action="store_true", help="serve gRPC on a second loop in its own thread")
    parser.add_argument("--channel-options", choices=sorted(CHANNEL_VARIANTS), default="default")
    parser.add_argument("--front-relay", action="store_true",
                        help="listen through a Python relay that could answer HTTP/1.1 itself (the gRPC listener behind it)")
    parser.add_argument("--h2-forwarder", action="store_true",
                        help="forward on an HTTP/2 layer of our own (benchmarks.grpc_h2_forwarder) instead of grpcio")
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
