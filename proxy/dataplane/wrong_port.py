"""A gRPC client at the REST port: answered in HTTP/2, with a gRPC status naming the gRPC port.

Without this a gRPC client pointed at the REST port reads uvicorn's HTTP/1.1 400 and reports
`Failed parsing HTTP/2 ... (Trying to connect an http1.x server)`, which never says where gRPC is. The
REST listener hands a connection that opens with HTTP/2's preface (`PRI * HTTP/2.0`, which its HTTP/1.1
parser refuses anyway: no cost on the REST path) to `GrpcAtRestPort`, which speaks just enough HTTP/2:
its SETTINGS, an ACK of the client's, then for the client's first call a trailers-only answer
(`grpc-status` UNIMPLEMENTED, `grpc-message` naming the gRPC port), GOAWAY, and close. Hand-written
frames (RFC 9113) and HPACK literals without indexing or Huffman (RFC 7541): a dozen bytes of protocol.
"""
from __future__ import annotations

import asyncio
import struct

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEAD = struct.Struct(">I B I")  # 24-bit length and 8-bit type packed in the first int; flags; stream
_HEADERS, _SETTINGS, _GOAWAY = 0x1, 0x4, 0x7
_ACK = 0x1
_END_STREAM_AND_HEADERS = 0x1 | 0x4
_MAX_BUFFERED = 64 * 1024  # a client's frames before its first HEADERS: far more than any gRPC client sends
GRPC_UNIMPLEMENTED = 12
CLOSE_AFTER_SECONDS = 1.0  # after GOAWAY: time for the client to read the answer and close first


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return _FRAME_HEAD.pack(len(payload) << 8 | kind, flags, stream) + payload


def _hpack_length(length: int) -> bytes:
    """An HPACK integer with a 7-bit prefix, the Huffman bit clear (RFC 7541 5.1)."""
    if length < 0x7F:
        return bytes((length,))
    out, length = [0x7F], length - 0x7F
    while length >= 0x80:
        out.append(length & 0x7F | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def hpack_literal(name: bytes, value: bytes) -> bytes:
    """A header field as a literal without indexing, new name (RFC 7541 6.2.2)."""
    return b"\x00" + _hpack_length(len(name)) + name + _hpack_length(len(value)) + value


def rest_port_message(grpc_port: int | None) -> str:
    if grpc_port is None:
        return "this port of the proxy speaks REST (HTTP/1.1), not gRPC; the proxy has no gRPC listener (config `grpc:`)"
    return f"this port of the proxy speaks REST (HTTP/1.1), not gRPC; the proxy's gRPC port is {grpc_port}"


def grpc_refusal(stream: int, message: str) -> bytes:
    """A trailers-only gRPC answer on `stream` (`:status` 200 is HPACK's static entry 8)."""
    block = b"\x88" + b"".join((
        hpack_literal(b"content-type", b"application/grpc"),
        hpack_literal(b"grpc-status", str(GRPC_UNIMPLEMENTED).encode()),
        hpack_literal(b"grpc-message", _percent_encoded(message)),
    ))
    return frame(_HEADERS, _END_STREAM_AND_HEADERS, stream, block)


def _percent_encoded(message: str) -> bytes:
    """grpc-message's encoding: printable ASCII but `%` as is, the rest percent-encoded (gRPC over HTTP/2)."""
    return b"".join(bytes((c,)) if 0x20 <= c <= 0x7E and c != 0x25 else b"%%%02X" % c for c in message.encode())


class GrpcAtRestPort(asyncio.Protocol):
    """One HTTP/2 connection at the REST port, from the bytes after the preface's first `skip` bytes on."""

    def __init__(self, message: str, skip: int, deadline: float):
        self.message = message
        self.skip = skip  # preface bytes still to come (a preface split over reads)
        self.deadline = deadline  # seconds for the client's first HEADERS, as for an HTTP/1.1 head
        self.buffer = b""
        self.answered = False
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(frame(_SETTINGS, 0, 0))
        self.timer = asyncio.get_running_loop().call_later(self.deadline, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return  # the rest of the client's call: read and dropped until it closes
        if self.skip:
            skipped = min(self.skip, len(data))
            self.skip -= skipped
            data = data[skipped:]
        buffer = self.buffer = self.buffer + data
        while len(buffer) >= 9:
            length_and_kind, flags, stream = _FRAME_HEAD.unpack_from(buffer)
            end = 9 + (length_and_kind >> 8)
            if len(buffer) < end:
                break
            kind = length_and_kind & 0xFF
            buffer = self.buffer = buffer[end:]
            if kind == _SETTINGS and not flags & _ACK:
                self.transport.write(frame(_SETTINGS, _ACK, 0))
            elif kind == _HEADERS:
                self._answer(stream & 0x7FFFFFFF)
                return
        if len(buffer) > _MAX_BUFFERED:
            self.transport.close()

    def _answer(self, stream: int) -> None:
        self.answered = True
        self.buffer = b""
        transport = self.transport
        transport.write(grpc_refusal(stream, self.message) + frame(_GOAWAY, 0, 0, struct.pack(">II", stream, 0)))
        if transport.can_write_eof():
            transport.write_eof()
        self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(CLOSE_AFTER_SECONDS, transport.close)

    def eof_received(self) -> bool:
        return False  # the client is done: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
