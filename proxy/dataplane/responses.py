"""Answers the proxy writes itself, in Qdrant's envelope, and the CORS headers a browser needs to
read them (and the proxy's `x-bluegreen-*` headers on forwarded answers).

CORS as Qdrant's default (`enable_cors`, actix-cors allowing any origin): an answer to a request with
an `Origin` allows that origin (`Vary: Origin`). The upstream's own answers carry its own CORS headers
unchanged; the proxy only adds its headers to their `Access-Control-Expose-Headers`.
"""
from __future__ import annotations

import json
import time
from typing import Awaitable, Callable

Send = Callable[[dict], Awaitable[None]]

JSON = (b"content-type", b"application/json")
COLOUR_HEADER = b"x-bluegreen-color"
COLLECTION_HEADER = b"x-bluegreen-collection"
_EXPOSE = b"access-control-expose-headers"
_EXPOSED = b"x-bluegreen-color, x-bluegreen-collection"


def error_body(message: str, started: float) -> bytes:
    """Qdrant's error envelope."""
    return json.dumps(
        {"status": {"error": message}, "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


def ok_body(result, started: float) -> bytes:
    """Qdrant's success envelope."""
    return json.dumps(
        {"result": result, "status": "ok", "time": round(time.perf_counter() - started, 6)}, separators=(",", ":")
    ).encode()


def colour_headers(colour: str, collection: str) -> tuple[tuple[bytes, bytes], ...]:
    return ((COLOUR_HEADER, colour.encode()), (COLLECTION_HEADER, collection.encode()))


def cors_headers(origin: bytes | None) -> list[tuple[bytes, bytes]]:
    """For an answer of the proxy's own to a browser's request (`origin` its Origin; None: none)."""
    if origin is None:
        return []
    return [(b"access-control-allow-origin", origin), (b"vary", b"origin"), (_EXPOSE, _EXPOSED)]


def exposing_colour_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A forwarded answer's headers with the proxy's `x-bluegreen-*` added to those the upstream exposes."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == _EXPOSE:
            if value.strip() != b"*":
                headers[index] = (name, value + b", " + _EXPOSED if value.strip() else _EXPOSED)
            return headers
    headers.append((_EXPOSE, _EXPOSED))
    return headers


async def respond(send: Send, status: int, headers: list, body: bytes, length: bytes | None = None) -> None:
    """`length`: a HEAD answer's Content-Length (the body is empty)."""
    headers.append((b"content-length", length or str(len(body)).encode()))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
    except Exception as exc:
        raise ResponseBroken from exc


async def respond_error(send: Send, status: int, message: str, started: float, origin: bytes | None, extra=()) -> None:
    """An error of the proxy's own in Qdrant's envelope, readable by a browser."""
    await respond(send, status, [JSON, *extra, *cors_headers(origin)], error_body(message, started))


class ResponseBroken(Exception):
    """The server refused part of a response it may have begun: no second response can follow."""
