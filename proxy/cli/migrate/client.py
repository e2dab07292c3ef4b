"""A small Qdrant REST client for the migrate commands: httpx, Qdrant's envelope, the api-key header.

The proxy's own upstream pool is tuned for forwarding bytes; these commands want parsed JSON, long
timeouts for snapshots and a streamed download, which httpx (a core dependency) gives directly.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_TIMEOUT = 60.0  # snapshots of large collections and wait=true writes take a while


class MigrateError(Exception):
    """A failure the command reports as one clear line and exit 1."""


class UpstreamError(MigrateError):
    """Qdrant answered with an error status; `message` is its `status.error` text."""

    def __init__(self, method: str, path: str, status: int, message: str):
        super().__init__(f"{method} {path}: {status} {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        # Overload, timeouts and server-side failures may pass; a refused request will not.
        return self.status in (408, 429) or self.status >= 500


class UpstreamUnreachable(MigrateError):
    """No answer: the connection was refused, reset or timed out (httpx's transport errors, not OSError)."""

    def __init__(self, url: str, cause: httpx.TransportError):
        self.reason = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"cannot reach the upstream at {url}: {self.reason}")


def segment(name: str) -> str:
    return quote(name, safe="")


def collection_path(name: str, *rest: str) -> str:
    return "/".join([f"/collections/{segment(name)}", *rest]).rstrip("/")


@dataclass(frozen=True)
class Target:
    """Where the commands talk to and with which key, from --upstream/--api-key and --config."""

    url: str
    api_key: str | None
    config: Any = None  # routing.config.Config when --config was given

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Target":
        config = None
        if args.config:
            from proxy.control.reload import read_config
            from routing.config import ConfigError

            try:
                config = read_config(args.config)[0]
            except ConfigError as exc:
                raise MigrateError(f"{args.config}: invalid\n{exc}") from None
        url = args.upstream or (config.upstream.url if config else None)
        if not url:
            raise MigrateError("no upstream: pass --upstream URL or --config PATH")
        if url == "embedded":
            raise MigrateError("the config's upstream is `embedded`: pass --upstream URL of the running upstream")
        api_key = args.api_key or os.environ.get("QDRANT_API_KEY") or (config.upstream.api_key if config else None)
        return cls(url.rstrip("/"), api_key or None, config)


class QdrantRest:
    """JSON calls returning `result`; every error status raises UpstreamError with Qdrant's message."""

    def __init__(self, target: Target, timeout: float = DEFAULT_TIMEOUT):
        headers = {"api-key": target.api_key} if target.api_key else {}
        self.url = target.url
        self.http = httpx.AsyncClient(base_url=target.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> "QdrantRest":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.aclose()

    async def call(self, method: str, path: str, body: Any = None, **params: Any) -> Any:
        try:
            response = await self.http.request(method, path, json=body, params=params or None)
        except httpx.TransportError as exc:
            raise UpstreamUnreachable(self.url, exc) from None
        if response.status_code >= 400:
            raise UpstreamError(method, path, response.status_code, _error_text(response))
        try:
            return response.json().get("result")
        except ValueError:
            raise UpstreamError(method, path, response.status_code, "answer is not JSON") from None

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
    except ValueError:
        pass
    return response.text.strip()[:300] or response.reason_phrase


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", metavar="URL", help="Qdrant REST endpoint (wins over the config's upstream)")
    parser.add_argument("--config", metavar="PATH", help="proxy config: its upstream and key, embedders and routes")
    parser.add_argument("--api-key", help="Qdrant api key (default: $QDRANT_API_KEY, else the config's upstream.api_key)")



def positive_int(text: str) -> int:
    """An argparse type: argparse names the flag in its message."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value
