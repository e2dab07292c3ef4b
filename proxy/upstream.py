"""The data path's HTTP client: one pooled aiohttp session to the upstream Qdrant.

aiohttp was chosen by measurement (about 8x httpx's AsyncClient here for a forwarding app).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from routing.config import Upstream as UpstreamSettings

# Hop-by-hop headers (RFC 9110 7.6.1) and those the client library sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "trailers", "transfer-encoding", "upgrade", "host", "content-length",
    }
)
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)
# aiohttp adds these unless told not to; the upstream must see only what the client sent.
_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
# aiohttp itself retries these once on a dead pooled connection; others we retry ourselves.
_RETRIED_BY_AIOHTTP = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[bytes, bytes]]  # hop-by-hop removed; content-length left to the server
    body: bytes


class UpstreamFailure(Exception):
    """No response came. `kind` is a metric label: `timeout` or `connect`."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class UpstreamClient:
    def __init__(self, base_url: str, settings: UpstreamSettings):
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self._api_key = settings.api_key
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self.settings.max_connections,
            keepalive_timeout=self.settings.keepalive_expiry,
            ttl_dns_cache=60,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout, connect=self.settings.connect_timeout),
            auto_decompress=False,  # bytes pass through exactly as the upstream sent them
            skip_auto_headers=_NO_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forward_headers(self, scope_headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope_headers
            if name not in _HOP_BY_HOP_BYTES
        ]
        if self._api_key and not any(name == "api-key" for name, _ in headers):
            headers.append(("api-key", self._api_key))
        return headers

    async def request(
        self, method: str, path_and_query: str, headers: list[tuple[str, str]], body: bytes
    ) -> UpstreamResponse:
        """Send one request; a pooled connection found dead before any response byte is retried once."""
        assert self._session is not None, "UpstreamClient.start() was not awaited"
        url = URL(self.base_url + path_and_query, encoded=True)
        retry = method not in _RETRIED_BY_AIOHTTP
        while True:
            try:
                async with self._session.request(
                    method, url, headers=headers, data=body or None, allow_redirects=False
                ) as response:
                    payload = await response.read()
                    return UpstreamResponse(
                        response.status,
                        [(k, v) for k, v in response.raw_headers if k.lower() not in _HOP_BY_HOP_BYTES],
                        payload,
                    )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if isinstance(exc, aiohttp.ClientConnectorError) or not retry:
                    raise UpstreamFailure("connect", _describe(exc)) from None
                retry = False
            except asyncio.TimeoutError:
                raise UpstreamFailure("timeout", f"upstream did not answer within {self.settings.timeout:g}s") from None
            except aiohttp.ClientError as exc:
                raise UpstreamFailure("connect", _describe(exc)) from None


def _describe(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return f"upstream unreachable: {text}"
