"""The control-plane tools' Qdrant REST client (migrate, compare): httpx, Qdrant's envelope, the api-key header.

The proxy's own upstream pool is tuned for forwarding bytes; these commands want parsed JSON, long
timeouts for snapshots and a streamed download, which httpx (a core dependency) gives directly.
Every failure is a QdrantRestError whose message is one line: an error status (UpstreamError, with
Qdrant's `status.error` text), no answer at all (UpstreamUnreachable: httpx's transport errors are
not OSErrors), or an answer that is not JSON (UnreadableAnswer).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT = 60.0  # snapshots of large collections and wait=true writes take a while


class QdrantRestError(Exception):
    """A call that did not give a result; the message is one line for the command to print."""


class UpstreamError(QdrantRestError):
    """Qdrant answered with an error status; `message` is its `status.error` text."""

    def __init__(self, method: str, path: str, status: int, message: str):
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        # Overload, timeouts and server-side failures may pass; a refused request will not.
        return self.status in (408, 429) or self.status >= 500


class UpstreamUnreachable(QdrantRestError):
    """No answer: the connection was refused, reset or timed out."""

    def __init__(self, url: str, cause: httpx.TransportError):
        self.cause = str(cause) or type(cause).__name__
        self.reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"cannot reach the upstream at {url}: {self.reason}")


class UnreadableAnswer(QdrantRestError):
    """A success status whose body is not JSON."""

    def __init__(self, method: str, path: str, detail: str):
        super().__init__(f"{method} {path}: the answer is not JSON ({detail})")
        self.detail = detail


def segment(name: str) -> str:
    return quote(name, safe="")


def collection_path(name: str, *rest: str) -> str:
    return "/".join([f"/collections/{segment(name)}", *rest]).rstrip("/")


class QdrantRest:
    """JSON calls returning `result`; use as `async with QdrantRest(url, api_key) as qdrant:`."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT):
        headers = {"api-key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> "QdrantRest":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: Any = None, *, content: bytes | None = None, **params: Any) -> Any:
        """The answer's `result`; `content` sends a JSON body already encoded (instead of `body`)."""
        headers = {"content-type": "application/json"} if content is not None else None
        try:
            response = await self.http.request(method, path, json=body, content=content, headers=headers,
                                               params=params or None)
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(self.url, exc) from None
        if response.status_code >= 400:
            raise UpstreamError(method, path, response.status_code, _error_text(response))
        try:
            document = response.json()
        except ValueError as exc:
            raise UnreadableAnswer(method, path, str(exc)) from None
        return document.get("result") if isinstance(document, dict) else None

    async def exists(self, name: str) -> bool:
        return bool((await self.call("GET", collection_path(name, "exists")) or {}).get("exists"))

    async def info(self, name: str) -> dict:
        return await self.call("GET", collection_path(name))

    async def count(self, name: str) -> int:
        return (await self.call("POST", collection_path(name, "points/count"), {"exact": True}))["count"]

    async def aliases(self) -> dict[str, str]:
        """{alias: collection} for the whole upstream."""
        listing = await self.call("GET", "/aliases")
        return {a["alias_name"]: a["collection_name"] for a in listing.get("aliases", [])}

    async def download(self, path: str, destination: Path) -> int:
        """Stream a file (a snapshot) to `destination`; its size in bytes."""
        try:
            return await self._download(path, destination)
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(self.url, exc) from None

    async def _download(self, path: str, destination: Path) -> int:
        async with self.http.stream("GET", path) as response:
            if response.status_code >= 400:
                await response.aread()
                raise UpstreamError("GET", path, response.status_code, _error_text(response))
            size = 0
            with open(destination, "wb") as out:
                async for chunk in response.aiter_bytes(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
        return size


def _error_text(response: httpx.Response) -> str:
    try:
        status = response.json().get("status")
        if isinstance(status, dict) and status.get("error"):
            return str(status["error"])
    except (ValueError, AttributeError):
        pass
    return response.text.strip()[:300] or response.reason_phrase
