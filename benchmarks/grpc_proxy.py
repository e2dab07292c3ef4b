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


async def serve(args: argparse.Namespace) -> None:
    import uvicorn

    options = UPSTREAM_CHANNEL_OPTIONS + CHANNEL_VARIANTS[args.channel_options]
    forwarder = GrpcForwarder(
        f"127.0.0.1:{args.upstream_port}", [QUERY_METHOD], port=args.port, channel_options=options,
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
    if not args.rest_port:
        await asyncio.Event().wait()  # the gRPC face alone: the variant without a REST listener beside it
    rest = uvicorn.Server(uvicorn.Config(health_app, host="127.0.0.1", port=args.rest_port, lifespan="off",
                                         access_log=False, log_level="warning"))
    try:
        await rest.serve()
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
    args = parser.parse_args(argv)
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args))
    else:
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
