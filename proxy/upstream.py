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


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # hop-by-hop and content-length removed
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """A header's value by lower-case name (upstreams choose their own case)."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


class UpstreamFailure(Exception):
    """No response came. `kind` is a metric label: `timeout` or `connect`."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _ClosedBeforeResponse(Exception):
    """The connection ended before any byte of the response: safe to retry on a fresh one."""


class _Connection(asyncio.Protocol):
    __slots__ = (
        "transport", "parser", "waiter", "status", "headers", "chunks", "keep_alive",
        "idle_since", "received_any", "head_request", "closed",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.idle_since = 0.0
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.keep_alive = True
        self.received_any = False
        self.head_request = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamFailure("connect", f"upstream sent an invalid HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.received_any:
            self._fail(UpstreamFailure("connect", "upstream closed the connection mid-response"))
        else:
            self._fail(_ClosedBeforeResponse())

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:
            return  # an interim 1xx response: the real one follows
        self.keep_alive = self.parser.should_keep_alive()
        if self.head_request:  # no body follows; llhttp cannot be told, so do not reuse the connection
            self.keep_alive = False
            self._complete()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status < 200:
            self.headers.clear()
            return
        if not self.head_request:
            self._complete()

    def _complete(self) -> None:
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
        self._slots = asyncio.Semaphore(settings.max_connections)
        self._open: set[_Connection] = set()

    async def start(self) -> None:
        return None  # connections are opened on demand

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._open.clear()
        self._idle.clear()

    def forward_headers(self, scope_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """A client's headers as they go upstream: hop-by-hop dropped, its own credentials (if any)
        kept, and never the proxy's key: that is `own_headers`' alone."""
        return [(name, value) for name, value in scope_headers if name not in _HOP_BY_HOP]

    def own_headers(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """Headers for a request the proxy answers for: its own calls (preflight, ...) and those of
        clients it authenticated itself (`clients`). Any client credential is replaced by `upstream.api_key`."""
        own = without_client_credentials(headers)
        if self._api_key is not None:
            own.append((_API_KEY, self._api_key))
        return own

    async def fetch_json(self, method: str, path: str, body: bytes) -> tuple[int, dict | None]:
        """A control-plane call (preflight): status and parsed JSON body (None when not JSON)."""
        headers = self.own_headers([(b"content-type", b"application/json")])
        response = await self.request(method, path.encode(), headers, body)
        try:
            document = json.loads(response.body)
        except ValueError:
            document = None
        return response.status, document if isinstance(document, dict) else None

    async def request(
        self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> UpstreamResponse:
        """Send one request; a pooled connection found dead before any response byte is retried once."""
        head = self._serialize_head(method, target, headers, len(body))
        async with self._slots:
            connection, reused = await self._acquire()
            try:
                return await self._exchange(connection, method, head, body)
            except _ClosedBeforeResponse:
                if not reused:
                    raise UpstreamFailure("connect", "upstream unreachable: connection closed before a response") from None
            connection, _ = await self._acquire(fresh=True)
            try:
                return await self._exchange(connection, method, head, body)
            except _ClosedBeforeResponse:
                raise UpstreamFailure("connect", "upstream unreachable: connection closed before a response") from None

    def _serialize_head(self, method: str, target: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
        lines = [method.encode(), b" ", self._prefix, target, b" HTTP/1.1\r\nhost: ", self._host_header, b"\r\n"]
        for name, value in headers:
            lines += (name, b": ", value, b"\r\n")
        if length or method in ("POST", "PUT", "PATCH"):
            lines += (b"content-length: ", str(length).encode(), b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def _acquire(self, fresh: bool = False) -> tuple[_Connection, bool]:
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
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._ssl,
                    server_hostname=self._host if self._secure else None,
                ),
                timeout=self.settings.connect_timeout,
            )
        except asyncio.TimeoutError:
            raise UpstreamFailure(
                "timeout", f"upstream {self._host}:{self._port} did not accept a connection within {self.settings.connect_timeout:g}s"
            ) from None
        except OSError as exc:
            raise UpstreamFailure("connect", f"upstream unreachable: {self._host}:{self._port}: {exc.strerror or exc}") from None
        self._open.add(connection)
        return connection, False

    async def _exchange(self, connection: _Connection, method: str, head: bytes, body: bytes) -> UpstreamResponse:
        loop = asyncio.get_running_loop()
        connection._reset()
        connection.head_request = method == "HEAD"
        waiter = connection.waiter = loop.create_future()
        timer = loop.call_later(self.settings.timeout, _expire, waiter)
        transport = connection.transport
        try:
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
            await waiter
        except asyncio.TimeoutError:
            self._discard(connection)
            raise UpstreamFailure("timeout", f"upstream did not answer within {self.settings.timeout:g}s") from None
        except BaseException:
            self._discard(connection)
            raise
        finally:
            timer.cancel()
            connection.waiter = None
        response = UpstreamResponse(
            connection.status,
            [(name, value) for name, value in connection.headers if name.lower() not in _HOP_BY_HOP],
            b"".join(connection.chunks),
        )
        if connection.keep_alive and not connection.closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)
        return response

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
