"""A real HTTP server that answers every request with what it received, in Qdrant's envelope.

Used where a test must see exactly what the proxy sent upstream (path, query, headers, body bytes).
A request header `x-echo-delay-ms` delays the answer (a slow upstream). Every request is also
recorded: `GET /__received` lists them in order (same fields as the echo), `DELETE /__received` forgets
them; a test sees each request of a dual write, and requests it made none of itself (preflight).
Run: python -m tests.echo_upstream --port N [--keepalive-timeout SECONDS]
"""
from __future__ import annotations

import argparse
import asyncio
import base64

from aiohttp import web


RECEIVED: list[dict] = []


async def received(request: web.Request) -> web.Response:
    if request.method == "DELETE":
        RECEIVED.clear()
    return web.json_response(RECEIVED)


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    seen = _seen(request, body)
    RECEIVED.append(seen)
    del RECEIVED[:-1000]  # a test's worth; long runs stay small
    delay_ms = request.headers.get("x-echo-delay-ms")
    if delay_ms:
        await asyncio.sleep(int(delay_ms) / 1000)
    if request.path == "/":
        return web.json_response({"title": "qdrant - vector search engine", "version": "1.19.0"})
    return web.json_response({"result": seen, "status": "ok", "time": 0.0}, headers={"x-upstream": "echo"})


def _seen(request: web.Request, body: bytes) -> dict:
    return {
        "method": request.method,
        "raw_path": request.raw_path,
        "headers": [[name.decode(), value.decode()] for name, value in request.raw_headers],
        "body_b64": base64.b64encode(body).decode(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--keepalive-timeout", type=float, default=75.0, help="close idle connections after this")
    args = parser.parse_args()
    # auto_decompress off: the echo shows the body bytes as they came, compressed or not.
    app = web.Application(client_max_size=64 * 1024 * 1024, handler_args={"auto_decompress": False})
    app.router.add_route("*", "/__received", received)
    app.router.add_route("*", "/{tail:.*}", echo)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None,
                keepalive_timeout=args.keepalive_timeout)


if __name__ == "__main__":
    main()
