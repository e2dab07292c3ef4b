"""The data path's HTTP client: a lean keep-alive HTTP/1.1 connection pool to the upstream Qdrant.

Chosen by measurement. Forwarding through uvicorn to a fixed-response upstream at 16 connections on
this 2-core machine: httpx AsyncClient ~1,400 requests/s, aiohttp ClientSession ~6,200 (py-spy: about
40 % of the proxy's CPU inside aiohttp's request machinery), this pool about twice aiohttp (see
benchmarks/). It does only what a reverse proxy needs: raw header bytes in and out, httptools
(llhttp, already uvicorn's parser) for responses, chunked decoding, idle expiry, one retry on a
pooled connection found dead, timeouts, TLS.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from routing.config import Upstream as UpstreamSettings

# Hop-by-hop headers (RFC 9110 7.6.1) plus those this client writes itself. `expect` too: the
# client's 100-continue was answered by our own server, and the body goes upstream at once.
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
        b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length", b"expect",
    }
)
_API_KEY = b"api-key"
_CLIENT_CREDENTIALS = frozenset({_API_KEY, b"authorization"})


def without_client_credentials(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name not in _CLIENT_CREDENTIALS]


_CONNECTION = b"connection"
_CONTENT_LENGTH = b"content-length"
_FRAMING = (b"content-length", b"transfer-encoding")
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive"})
_PLAIN_CONNECTION = frozenset({b"close", b"keep-alive", b"Close", b"Keep-Alive"})  # name no other header
_UNREACHABLE = "upstream unreachable: connection closed before a response"


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # hop-by-hop, those named in Connection and content-length removed
    body: bytes
    head_length: bytes | None = None  # a HEAD answer's Content-Length: the client gets it, and no body

    def header(self, name: bytes) -> bytes | None:
        """A header's value by lower-case name (upstreams choose their own case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class UpstreamFailure(Exception):
    """No usable response came. `kind` is a metric label: `timeout`, `connect`, `too_large` (past
    upstream.max_response_bytes) or `overloaded` (the pool's wait queue is full)."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _ClosedBeforeResponse(Exception):
    """The connection ended before any byte of the response: safe to retry on a fresh one when the
    request may be repeated."""


class _Unsolicited(Exception):
    """The upstream began another response after the one asked for was complete."""


def _without_named(headers: list[tuple[bytes, bytes]], connection: bytes) -> list[tuple[bytes, bytes]]:
    """`headers` without the fields a `Connection` value names (RFC 9110 7.6.1)."""
    named = {token.strip().lower() for token in connection.split(b",")} - _CONNECTION_OPTIONS
    return [(name, value) for name, value in headers if name.lower() not in named] if named else headers


class _Connection(asyncio.Protocol):
    __slots__ = (
        "transport", "parser", "waiter", "status", "headers", "chunks", "size", "max_size", "keep_alive",
        "idle_since", "received_any", "head_request", "headers_done", "complete", "closed", "connection",
    )

    def __init__(self, max_size: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.idle_since = 0.0
        self.max_size = max_size
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        """Forget the last exchange: nothing of an answer outlives its hand-over."""
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep_alive = True
        self.received_any = False
        self.head_request = False
        self.headers_done = False
        self.complete = False
        self.connection: bytes | None = None  # the answer's Connection header

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():  # nothing was asked: an upstream out of step
            self.close()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if isinstance(cause, UpstreamFailure):
                self._fail(cause)
            elif not isinstance(cause, _Unsolicited):
                self._fail(UpstreamFailure("connect", f"upstream sent an invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.headers_done and not self.complete and not any(n.lower() in _FRAMING for n, _ in self.headers):
            self._complete()  # a body delimited by the end of the connection (no length, not chunked)
        elif self.received_any:
            self._fail(UpstreamFailure("connect", "upstream closed the connection mid-response"))
        else:
            self._fail(_ClosedBeforeResponse())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # llhttp reports a chunked body's trailer fields here too: dropped
            self.headers.append((name, value))
            if len(name) == 10 and name.lower() == _CONNECTION:
                self.connection = value

    def on_headers_complete(self) -> None:
        if self.complete:  # a second answer in the same bytes (its header fields were not kept)
            raise _Unsolicited
        status = self.status = self.parser.get_status_code()
        if status < 200:
            return  # an interim 1xx response: the real one follows
        if status > 599:
            raise UpstreamFailure("connect", f"upstream sent an invalid HTTP status {status}")
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_request:  # no body follows; llhttp cannot be told, so do not reuse the connection
            self.keep_alive = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.max_size:
            raise UpstreamFailure(
                "too_large", f"upstream answer exceeds {self.max_size} bytes (upstream.max_response_bytes)"
            )
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.headers.clear()
            return
        if not self.head_request:
            self._complete()

    def _complete(self) -> None:
        self.complete = True
        if self.transport is not None and self.transport.get_write_buffer_size():
            self.keep_alive = False  # answered before reading all of the body: the rest would be misread
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class UpstreamClient:
    def __init__(self, base_url: str, settings: UpstreamSettings):
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._secure else 80)
        self._ssl = ssl.create_default_context() if self._secure else None
        self._prefix = parts.path.rstrip("/").encode()
        self._host_header = parts.netloc.encode()
        self._api_key = settings.api_key.encode() if settings.api_key else None
        self._idle: deque[_Connection] = deque()
        self._free_slots = settings.max_connections
        self._waiters: deque[asyncio.Future] = deque()  # requests queued for a slot, first come first served
        self._open: set[_Connection] = set()
        self._new_connection = lambda: _Connection(settings.max_response_bytes)

    async def start(self) -> None:
        return None  # connections are opened on demand

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    def deadline(self) -> float:
        """When a request arriving now must have its answer (upstream.timeout), on time.monotonic()."""
        return time.monotonic() + self.settings.timeout

    def forward_headers(self, scope_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A client's headers as they go upstream: hop-by-hop and those its `Connection` names dropped,
        its own credentials (if any) kept, and never the proxy's key: that is `own_headers`' alone."""
        headers = [(name, value) for name, value in scope_headers if name not in _HOP_BY_HOP]
        for name, value in scope_headers:  # the server gives lower-case names
            if name == _CONNECTION:
                if value not in _PLAIN_CONNECTION:
                    headers = _without_named(headers, value)
                break
        return headers

    def own_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Headers for a request the proxy answers for: its own calls (preflight, ...) and those of
        clients it authenticated itself (`clients`). Any client credential is replaced by `upstream.api_key`."""
        own = without_client_credentials(headers)
        if self._api_key is not None:
            own.append((_API_KEY, self._api_key))
        return own

    async def fetch_json(self, method: str, path: str, body: bytes) -> tuple[int, dict | None]:
        """A control-plane call (preflight; the Qdrant state store, whose writes are conditional and so
        safe to send twice): status and parsed JSON body (None when not JSON)."""
        headers = self.own_headers([(b"content-type", b"application/json")])
        response = await self.request(method, path.encode(), headers, body, repeatable=True)
        try:
            document = json.loads(response.body)
        except ValueError:
            document = None
        return response.status, document if isinstance(document, dict) else None

    async def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
        deadline: float | None = None, repeatable: bool = False,
    ) -> UpstreamResponse:
        """Send one request, answered by `deadline` (default: upstream.timeout from now) pool wait
        included. A pooled connection found dead before any response byte is retried once on a fresh
        one, only when the request is `repeatable` (the caller knows what is safe to send twice)."""
        if deadline is None:
            deadline = self.deadline()
        head = self._serialize_head(method, target, headers, len(body))
        if self._free_slots:  # the common case: no suspension, no queue
            self._free_slots -= 1
        else:
            await self._wait_for_slot(deadline)
        try:
            connection, reused = await self._acquire(deadline)
            try:
                return await self._exchange(connection, method, head, body, deadline)
            except _ClosedBeforeResponse:
                if not (reused and repeatable):
                    raise UpstreamFailure("connect", _UNREACHABLE) from None
            connection, _ = await self._acquire(deadline, fresh=True)
            try:
                return await self._exchange(connection, method, head, body, deadline)
            except _ClosedBeforeResponse:
                raise UpstreamFailure("connect", _UNREACHABLE) from None
        finally:
            self._release_slot()

    async def _wait_for_slot(self, deadline: float) -> None:
        """Queue for one of upstream.max_connections until `deadline`; past upstream.max_queue waiters,
        refused at once."""
        if len(self._waiters) >= self.settings.max_queue:
            raise UpstreamFailure(
                "overloaded",
                f"Service overloaded: all {self.settings.max_connections} upstream connections busy and "
                f"{self.settings.max_queue} requests waiting (upstream.max_connections, upstream.max_queue)",
            )
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, deadline - time.monotonic())
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot just as it gave up: pass it on
            else:
                with contextlib.suppress(ValueError):  # a release may have dropped it already
                    self._waiters.remove(waiter)
            if isinstance(exc, asyncio.TimeoutError):
                raise self._timed_out() from None
            raise

    def _release_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the longest waiter
                return
        self._free_slots += 1

    def _timed_out(self) -> UpstreamFailure:
        return UpstreamFailure("timeout", f"upstream did not answer within {self.settings.timeout:g}s (upstream.timeout)")

    def _serialize_head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        lines = [method.encode(), b" ", self._prefix, target, b" HTTP/1.1\r\nhost: ", self._host_header, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if length or method in ("POST", "PUT", "PATCH"):
            lines += (b"content-length: ", str(length).encode(), b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _acquire(self, deadline: float, fresh: bool = False) -> tuple[_Connection, bool]:
        """An idle pooled connection younger than keepalive_expiry, else a new one."""
        if not fresh:
            expiry = self.settings.keepalive_expiry
            now = time.monotonic()
            while self._idle:
                connection = self._idle.pop()  # most recent first: the least likely to have expired
                if not connection.closed and now - connection.idle_since < expiry:
                    return connection, True
                self._discard(connection)
        loop = asyncio.get_running_loop()
        remaining = deadline - time.monotonic()
        connect_timeout = self.settings.connect_timeout
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    self._new_connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._secure else None,
                ),
                timeout=min(connect_timeout, remaining),
            )
        except asyncio.TimeoutError:
            if remaining < connect_timeout:
                raise self._timed_out() from None
            raise UpstreamFailure(
                "timeout", f"upstream {self._host}:{self._port} did not accept a connection within {connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamFailure("connect", f"upstream unreachable: {self._host}:{self._port}: {exc.strerror or exc}") from None
        self._open.add(connection)
        return connection, False

    async def _exchange(
        self, connection: _Connection, method: str, head: bytes, body: bytes, deadline: float
    ) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        head_request = connection.head_request = method == "HEAD"
        waiter = connection.waiter = loop.create_future()
        timer = loop.call_later(deadline - time.monotonic(), _expire, waiter)
        transport = connection.transport
        try:
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
            await waiter
        except asyncio.TimeoutError:
            self._discard(connection)
            raise self._timed_out() from None
        except BaseException:
            self._discard(connection)
            raise
        finally:
            timer.cancel()
            connection.waiter = None
        length = None
        if head_request:
            length = next((v for n, v in connection.headers if n.lower() == _CONTENT_LENGTH), None)
        headers = [(name, value) for name, value in connection.headers if name.lower() not in _HOP_BY_HOP]
        if connection.connection is not None and connection.connection not in _PLAIN_CONNECTION:
            headers = _without_named(headers, connection.connection)
        response = UpstreamResponse(connection.status, headers, b"".join(connection.chunks), length)
        if connection.keep_alive and not connection.closed:
            connection._reset()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)
        return response

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        connection._reset()
        self._open.discard(connection)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
