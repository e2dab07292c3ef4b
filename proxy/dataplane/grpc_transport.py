"""The gRPC face's transport: a grpc.aio server that forwards unary calls to an upstream as raw bytes.

Nothing is parsed on the way: the handlers have no (de)serialisers, so the client's request bytes
reach the upstream as sent (fields no schema here knows included) and the upstream's answer bytes
reach the client as sent. Per call the client's deadline (`grpc-timeout`) bounds the upstream call,
the metadata keys named in `forward_metadata` go upstream, and the upstream's status, message and
trailing metadata come back. `GrpcForwarder.handle` is the one place a router decides per call (pass
through, rewrite the bytes, refuse); by default it forwards.

Why this shape (measured in benchmarks/grpc-design.md): the server and the upstream channels on the
proxy's own event loop (uvloop), two upstream channels (connections) taken in turn per call (more
throughput at 16 streams than one, at the same CPU per call), no per-call work beyond the call, and grpc
core's socket I/O done by grpc.aio's poller thread itself (INLINE_IO) rather than handed to
EventEngine threads: per forwarded call that saves thread hand-offs worth 15-20 % of the CPU.
"""
from __future__ import annotations

# First: grpc core's I/O mode, set in the environment before grpc is imported.
from proxy.dataplane.grpc_io import INLINE_IO  # noqa: F401  isort: skip

import functools  # noqa: E402 (after the environment grpc reads)
import itertools  # noqa: E402
import logging  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402

import grpc  # noqa: E402
from grpc import aio  # noqa: E402

log = logging.getLogger("bluegreen.grpc")

Metadata = Sequence[tuple[str, str | bytes]]

# Keys grpc itself manages; never copied from a caller (the deadline travels as the call's timeout).
RESERVED_METADATA = frozenset({"grpc-timeout", "te", "content-type", "user-agent", "grpc-accept-encoding", "grpc-encoding"})

# The channel to the upstream: retries off (a forwarded call must not be repeated behind the client's
# back: the client decides), no proxy from the environment, and large messages allowed as Qdrant does.
UPSTREAM_CHANNEL_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.enable_retries", 0),
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)
SERVER_OPTIONS: tuple[tuple[str, object], ...] = (
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.so_reuseport", 0),  # a second proxy on the same port is a mistake to report, not to share
)


class GrpcCallError(Exception):
    """A call ends with this status instead of an answer (raised from `handle`)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: Metadata = ()):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.trailing_metadata = tuple(trailing_metadata)


class GrpcForwarder:
    """A grpc.aio server for `methods` (full paths, `/qdrant.Points/Query`) forwarding raw bytes upstream.

    `await start()`, then `await stop()`; both on the loop that serves the calls.
    """

    # 8 parameters: the forwarder's options, each with a measured default (benchmarks/grpc-design.md).
    def __init__(
        self,
        upstream: str,
        methods: Iterable[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        # The client's own credentials pass as sent (as on REST without `clients`); a router that
        # authenticates clients itself replaces them in the metadata it hands to `forward`.
        forward_metadata: Iterable[str] = ("x-user-id", "api-key", "authorization"),
        channels: int = 2,
        channel_options: Sequence[tuple[str, object]] = UPSTREAM_CHANNEL_OPTIONS,
        server_options: Sequence[tuple[str, object]] = SERVER_OPTIONS,
    ):
        self.upstream = upstream
        self.methods = tuple(methods)
        self.host = host
        self.port = port
        self.forward_metadata = frozenset(key.lower() for key in forward_metadata) - RESERVED_METADATA
        self._channel_count = channels
        self._channel_options = tuple(channel_options)
        self._server_options = tuple(server_options)
        self._channels: list[aio.Channel] = []
        self._calls: dict[str, itertools.cycle] = {}  # method -> upstream callables, round robin over channels
        self._server: aio.Server | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> int:
        """Open the upstream channel(s) and listen; returns the bound port."""
        self._channels = [
            # Each its own connection: channels with equal options would share one from grpc's global pool.
            aio.insecure_channel(self.upstream, options=self._channel_options + (("grpc.use_local_subchannel_pool", 1),))
            for _ in range(self._channel_count)
        ]
        self._calls = {
            method: itertools.cycle([channel.unary_unary(method) for channel in self._channels]) for method in self.methods
        }
        self._server = aio.server(options=self._server_options)
        handlers = {method: grpc.unary_unary_rpc_method_handler(functools.partial(self._serve, method)) for method in self.methods}
        self._server.add_generic_rpc_handlers((_ByPath(handlers),))
        self.port = self._server.add_insecure_port(f"{self.host}:{self.port}")
        await self._server.start()
        return self.port

    async def stop(self, grace: float | None = 5.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
        for channel in self._channels:
            await channel.close()

    # ------------------------------------------------------------ per call

    async def handle(self, method: str, request: bytes, metadata: Metadata, timeout: float | None) -> bytes:
        """What a call gets: the upstream's answer to `request`. A router overrides this to route or
        rewrite (calling `forward` with other bytes) or to refuse (raising `GrpcCallError`)."""
        return await self.forward(method, request, metadata, timeout)

    async def forward(self, method: str, request: bytes, metadata: Metadata, timeout: float | None) -> bytes:
        """One upstream call with these bytes; an upstream status other than OK is raised as GrpcCallError."""
        try:
            return await next(self._calls[method])(request, timeout=timeout, metadata=metadata)
        except aio.AioRpcError as error:
            raise GrpcCallError(error.code(), error.details() or "", error.trailing_metadata() or ()) from None

    async def serve_call(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        """One call as received: the `forward_metadata` keys and the deadline handed to `handle`. A face
        that reads all of the call (its metadata, its initial metadata to send) overrides this instead."""
        wanted = self.forward_metadata
        metadata = tuple((key, value) for key, value in context.invocation_metadata() if key in wanted)
        return await self.handle(method, request, metadata, context.time_remaining())

    async def _serve(self, method: str, request: bytes, context: aio.ServicerContext) -> bytes:
        try:
            return await self.serve_call(method, request, context)
        except GrpcCallError as error:
            if error.trailing_metadata:
                context.set_trailing_metadata(_passable(error.trailing_metadata))
            await context.abort(error.code, error.details)
        except Exception as error:  # a bug in a router must answer the call, not hang it (cancellation is no Exception)
            log.exception("gRPC %s: the handler failed", method)
            await context.abort(grpc.StatusCode.INTERNAL, f"proxy error: {type(error).__name__}")


def _passable(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    """Trailing metadata a server may set: grpc's own status keys are its to write."""
    return tuple((key, value) for key, value in metadata if not key.startswith("grpc-"))


class _ByPath(grpc.GenericRpcHandler):
    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler]):
        self._handlers = handlers

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)
