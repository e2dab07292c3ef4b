"""uvicorn's httptools protocol with the limits a server facing unknown clients needs.

uvicorn itself has none of these: no cap on open connections (each holds a file descriptor), no
deadline for a request's head or its body (a client sending one byte a minute holds its connection
forever), no bound on a head's size or its number of fields (httptools buffers an unfinished header
whole), and its own refusals are plain text. Everything here answers in Qdrant's error envelope and closes.

Chunked trailers: llhttp reports a chunked body's trailer fields through the same callbacks as
headers, httptools passes them to `on_header`, and uvicorn appends them to the list its ASGI scope
already holds as `headers`; a request that is read in one go therefore had its trailer fields as
headers (a trailer `x-user-id` chose the colour, a trailer `api-key` was forwarded). The scope keeps
the list it was given; trailer fields go to a fresh one nobody reads.
"""
from __future__ import annotations

import time

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from proxy.dataplane.responses import cors_headers, error_body
from proxy.dataplane.wrong_port import PREFACE, GrpcAtRestPort, rest_port_message
from routing.config import Limits


class Refusal(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_UPGRADE = Refusal(400, "Wrong input: protocol upgrades (WebSocket, CONNECT) are not part of Qdrant's REST API")


def limited_protocol(limits: Limits) -> type[HttpToolsProtocol]:
    """The protocol class for one listener with `limits` (read once, at start-up)."""
    return type("LimitedHttpToolsProtocol", (_LimitedProtocol,), {"limits": limits, "_open": {}})


def announce_grpc_port(protocol: type[HttpToolsProtocol], port: int) -> None:
    """The gRPC port a gRPC client at this listener is sent to (known once the gRPC listener is bound)."""
    protocol.grpc_port = port


class _LimitedProtocol(HttpToolsProtocol):
    limits: Limits
    _open: dict  # this listener's connections, oldest first (a dict keeps insertion order)
    grpc_port: int | None = None  # the proxy's gRPC listener, named to a gRPC client at this port
    _head_timer = None
    _head_bytes = 0  # bytes received while the current head was still incomplete
    _feed_bytes = 0  # the chunk being parsed now
    _body_timer = None
    _body_cycle = None  # the request whose body the timer waits for

    def connection_made(self, transport) -> None:
        if len(self._open) >= self.limits.max_connections and not self._evict_an_idle_connection():
            self.transport = transport  # not counted: refused before it holds anything
            self._refuse(Refusal(503, f"Service overloaded: {self.limits.max_connections} connections busy (limits.max_connections)"))
            return
        self._open[self] = None
        super().connection_made(transport)
        self._start_head_timer()

    def _evict_an_idle_connection(self) -> bool:
        """At the cap, the oldest connection with no request in progress makes room: idle ones (and
        ones still sending a head) cannot keep a client with a request out."""
        for connection in self._open:
            cycle = connection.cycle
            if cycle is None or cycle.response_complete:
                del self._open[connection]
                connection._stop_head_timer()
                connection.transport.close()
                return True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.pop(self, None)
        self._stop_head_timer()
        self._stop_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._feed_bytes = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(_UPGRADE)  # refused in on_headers_complete already; this is a backstop
            return
        except httptools.HttpParserError as exc:
            if self.cycle is None and self.parser.get_method() == b"PRI":  # HTTP/2's preface opens the connection
                self._hand_over_to_grpc_refusal(data)
                return
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, Refusal) else Refusal(400, f"Wrong input: invalid HTTP request: {exc}"))
            return
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope:  # inside a head: its fields are not all in
            if self._body_timer is not None:
                self._stop_body_timer()
            if self._head_timer is None:
                self._start_head_timer()
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(Refusal(431, f"Request header fields too large: over {self.limits.max_header_bytes} bytes (limits.max_header_bytes)"))
        elif cycle.more_body:  # a body still coming: it has limits.body_timeout in all
            if self._body_cycle is not cycle:
                self._stop_body_timer()
                self._body_cycle = cycle
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_too_slow)
        elif self._body_timer is not None:
            self._stop_body_timer()

    def _hand_over_to_grpc_refusal(self, data: bytes) -> None:
        """A gRPC (HTTP/2) client: told in HTTP/2 where the gRPC port is (proxy.dataplane.wrong_port).
        The parser stopped within the preface; the chunks before `data` were its first head bytes."""
        self._open.pop(self, None)
        self._stop_head_timer()
        self._unset_keepalive_if_required()
        self.connections.discard(self)  # no longer uvicorn's: its shutdown has nothing to wait for here
        refusal = GrpcAtRestPort(rest_port_message(self.grpc_port), len(PREFACE) - self._head_bytes, self.limits.header_timeout)
        transport = self.transport
        transport.set_protocol(refusal)
        refusal.connection_made(transport)
        refusal.data_received(data)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limits = self.limits
        # A head that arrived whole in this chunk was never counted above: the bytes seen cap its size,
        # so only a chunk that large has its head measured.
        if self._head_bytes + self._feed_bytes > limits.max_header_bytes and self._head_size() > limits.max_header_bytes:
            raise Refusal(431, f"Request header fields too large: over {limits.max_header_bytes} bytes (limits.max_header_bytes)")
        self._head_bytes = 0
        if len(self.headers) > limits.max_header_count:
            raise Refusal(431, f"Request header fields too large: over {limits.max_header_count} fields (limits.max_header_count)")
        if self.parser.should_upgrade():
            raise _UPGRADE
        super().on_headers_complete()
        self.headers = []  # trailer fields land here, not in the scope's list (see the module doc)

    def _head_size(self) -> int:
        """The head's bytes as parsed: request line, each `name: value` line and the blank line (what a
        client sends, but for optional whitespace the parser drops and nothing stores)."""
        size = len(self.parser.get_method()) + len(self.url) + len(b"  HTTP/1.1\r\n\r\n")
        for name, value in self.headers:
            size += len(name) + len(value) + 4  # ": " and CRLF
        return size

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        self._refuse(Refusal(408, f"Request timeout: headers not received within {self.limits.header_timeout:g}s (limits.header_timeout)"))

    def _stop_body_timer(self) -> None:
        self._body_cycle = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        """The body did not arrive in time: 408 unless the app has begun an answer, and close either
        way (the app, waiting for the body, then sees the client gone)."""
        cycle = self._body_cycle
        self._body_timer = self._body_cycle = None
        refusal = Refusal(408, f"Request timeout: body not received within {self.limits.body_timeout:g}s (limits.body_timeout)")
        answer = cycle is not None and not cycle.response_started
        self._refuse(refusal, answer, cycle.scope["headers"] if answer else ())

    def _refuse(self, refusal: Refusal, answer: bool | None = None, head: list | tuple | None = None) -> None:
        """Answer in Qdrant's envelope and close: what is left of the connection cannot be trusted.
        `answer` None: only between requests (never inside another response). `head`: the request's
        header fields (default: those parsed so far), for a browser's Origin."""
        self._stop_head_timer()
        self._stop_body_timer()
        transport = self.transport
        if transport.is_closing():
            return
        if answer is None:
            answer = self.cycle is None or self.cycle.response_complete
        if answer:
            body = error_body(refusal.message, time.perf_counter())
            origin = next((value for name, value in ((self.headers or ()) if head is None else head) if name == b"origin"), None)
            cors = b"".join(name + b": " + value + b"\r\n" for name, value in cors_headers(origin))
            transport.write(b"".join((
                STATUS_LINE[refusal.status], b"content-type: application/json\r\n", cors, b"content-length: ",
                str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body,
            )))
        transport.close()
