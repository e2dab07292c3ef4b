"""A gRPC forwarder on an HTTP/2 layer of our own (the `h2` state machine on the event loop), for the
design study only: `python -m benchmarks.grpc_proxy --h2-forwarder ...` (variant `h2-forwarder`).

It answers the question the study left open (benchmarks/grpc-design.md, "Against the targets"): how
far below grpcio's two sides a forwarder gets with no grpc core threads at all. Unary calls, each
request's headers and bytes sent upstream as they came on one HTTP/2 connection, the answer's headers
(plus the colour's `x-bluegreen-color`, as the face adds), message and trailers back as they came.
Flow control is honoured both ways; deadlines, keepalive, GOAWAY, TLS, limits and every error path a
production face needs are not here: not a server to deploy.
"""
from __future__ import annotations

import asyncio

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated, DataReceived, RequestReceived, ResponseReceived, StreamEnded, StreamReset, TrailersReceived, WindowUpdated,
)
from h2.exceptions import ProtocolError

COLOUR_HEADER = (b"x-bluegreen-color", b"blue")
_UNAVAILABLE = ((b":status", b"200"), (b"content-type", b"application/grpc"), (b"grpc-status", b"14"),
                (b"grpc-message", b"upstream unreachable"))


class _Sender:
    """Data frames within the peer's flow-control windows; what does not fit waits for WINDOW_UPDATE."""

    def __init__(self, connection: H2Connection):
        self.connection = connection
        self.waiting: dict[int, tuple[bytes, tuple | None, bool]] = {}  # stream -> what send() still has to send

    def send(self, stream: int, data: bytes, trailers: tuple | None = None, end: bool = False) -> None:
        """`data`, then `trailers` (which end the stream) if given, else the stream ends with the data if `end`."""
        connection = self.connection
        while True:
            room = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size)
            if data and room <= 0:
                self.waiting[stream] = (data, trailers, end)
                return
            chunk, data = data[:room], data[room:]
            ends_here = not data and end and trailers is None
            if chunk or ends_here:
                connection.send_data(stream, chunk, end_stream=ends_here)
            if not data:
                break
        if trailers is not None:
            connection.send_headers(stream, trailers, end_stream=True)

    def window_opened(self, stream: int) -> None:
        for waiting in list(self.waiting) if stream == 0 else [stream] if stream in self.waiting else []:
            self.send(waiting, *self.waiting.pop(waiting))


class UpstreamConnection(asyncio.Protocol):
    """One HTTP/2 connection to the upstream; `call(headers, body)` -> future of (headers, message, trailers)."""

    def __init__(self) -> None:
        self.connection = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.sender = _Sender(self.connection)
        self.calls: dict[int, list] = {}  # stream -> [future, headers, chunks, trailers]

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connection.initiate_connection()
        transport.write(self.connection.data_to_send())

    def call(self, headers: list, body: bytes) -> asyncio.Future:
        future = asyncio.get_running_loop().create_future()
        connection = self.connection
        stream = connection.get_next_available_stream_id()
        self.calls[stream] = [future, (), [], ()]
        connection.send_headers(stream, headers)
        self.sender.send(stream, body, end=True)
        self.transport.write(connection.data_to_send())
        return future

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        for event in connection.receive_data(data):
            if isinstance(event, DataReceived):
                self.calls[event.stream_id][2].append(event.data)
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, ResponseReceived):
                self.calls[event.stream_id][1] = event.headers
            elif isinstance(event, TrailersReceived):
                self.calls[event.stream_id][3] = event.headers
            elif isinstance(event, StreamEnded):
                future, headers, chunks, trailers = self.calls.pop(event.stream_id)
                future.set_result((headers, b"".join(chunks), trailers))
            elif isinstance(event, StreamReset):
                call = self.calls.pop(event.stream_id, None)
                if call is not None:
                    call[0].set_exception(ConnectionError(f"upstream reset stream {event.stream_id}"))
            elif isinstance(event, WindowUpdated):
                self.sender.window_opened(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self.transport.write(connection.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        for future, *_ in self.calls.values():
            if not future.done():
                future.set_exception(ConnectionError("upstream connection lost"))
        self.calls.clear()


class ClientConnection(asyncio.Protocol):
    """A client's HTTP/2 connection: each finished request goes upstream, its answer comes back."""

    def __init__(self, upstream: UpstreamConnection):
        self.upstream = upstream
        self.connection = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.sender = _Sender(self.connection)
        self.requests: dict[int, tuple[list, list[bytes]]] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.connection.initiate_connection()
        transport.write(self.connection.data_to_send())

    def data_received(self, data: bytes) -> None:
        connection = self.connection
        try:
            events = connection.receive_data(data)
        except ProtocolError:
            self.transport.write(connection.data_to_send())
            self.transport.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.requests[event.stream_id] = (event.headers, [])
            elif isinstance(event, DataReceived):
                self.requests[event.stream_id][1].append(event.data)
                connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                stream = event.stream_id
                headers, chunks = self.requests.pop(stream)
                answer = self.upstream.call(headers, b"".join(chunks))
                answer.add_done_callback(lambda done, stream=stream: self._answer(stream, done))
            elif isinstance(event, StreamReset):
                self.requests.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                self.sender.window_opened(event.stream_id)
            elif isinstance(event, ConnectionTerminated):
                self.transport.close()
        self.transport.write(connection.data_to_send())

    def _answer(self, stream: int, done: asyncio.Future) -> None:
        if self.transport.is_closing():
            return
        connection = self.connection
        try:
            if done.exception() is not None:
                connection.send_headers(stream, _UNAVAILABLE, end_stream=True)
            else:
                headers, message, trailers = done.result()
                if trailers:
                    connection.send_headers(stream, list(headers) + [COLOUR_HEADER])
                    self.sender.send(stream, message, trailers=trailers)
                else:  # trailers-only (how gRPC answers an error): the status is in these headers
                    connection.send_headers(stream, list(headers) + [COLOUR_HEADER], end_stream=True)
        except ProtocolError:  # the client reset the stream meanwhile
            pass
        self.transport.write(connection.data_to_send())


async def start(port: int, upstream_port: int) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    _, upstream = await loop.create_connection(UpstreamConnection, "127.0.0.1", upstream_port)  # connected on return
    return await loop.create_server(lambda: ClientConnection(upstream), "127.0.0.1", port)
