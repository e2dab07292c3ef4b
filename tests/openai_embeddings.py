"""A small OpenAI-compatible embedding service (`POST /v1/embeddings`) with switchable faults.

Each text gets a deterministic unit vector (seeded by its sha256), so the same text always embeds to
the same vector. Every request is recorded (headers and body). Control, for tests:
- `POST /control {"mode": "ok" | "status" | "slow" | "wrong_dims" | "garbage", "status": 500, "delay": 2.0,
  "quote_key": true}` (with `status`: the error message quotes the bearer key it got)
- `GET /requests` (what was received), `DELETE /requests` (forget it).
Run: python -m tests.openai_embeddings --port N --dimensions D
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import random

from aiohttp import web


def vector_for(text: str, dimensions: int) -> list[float]:
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    values = [rng.gauss(0, 1) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


class Service:
    def __init__(self, dimensions: int):
        self.dimensions = dimensions
        self.mode = {"mode": "ok"}
        self.requests: list[dict] = []

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/control", self.control)
        app.router.add_get("/requests", self.list_requests)
        app.router.add_delete("/requests", self.forget_requests)
        app.router.add_get("/", self.alive)
        return app

    async def alive(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"headers": dict(request.headers), "body": body})
        mode = self.mode.get("mode", "ok")
        if mode == "status":
            message = "the model is down"
            if self.mode.get("quote_key"):  # as some services do when they refuse a key
                message = f"key refused: {request.headers.get('Authorization', '').removeprefix('Bearer ')}"
            return web.json_response({"error": {"message": message}}, status=self.mode.get("status", 500))
        if mode == "slow":
            await asyncio.sleep(self.mode.get("delay", 2.0))
        if mode == "garbage":
            return web.Response(text="<html>not json</html>", content_type="text/html")
        texts = body["input"]
        dimensions = self.dimensions + 1 if mode == "wrong_dims" else self.dimensions
        data = [{"object": "embedding", "index": i, "embedding": vector_for(t, dimensions)} for i, t in enumerate(texts)]
        data.reverse()  # services may answer out of order: clients must sort by index
        return web.json_response({"object": "list", "data": data, "model": body.get("model"), "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    async def control(self, request: web.Request) -> web.Response:
        self.mode = await request.json()
        return web.json_response(self.mode)

    async def list_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def forget_requests(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return web.json_response({"ok": True})


@contextlib.asynccontextmanager
async def embedding_service(dimensions: int = 32):
    """The test embedding service in this process's loop on a free port: (base url, its state)."""
    state = Service(dimensions)
    runner = web.AppRunner(state.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dimensions", type=int, default=32)
    args = parser.parse_args()
    web.run_app(Service(args.dimensions).app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
