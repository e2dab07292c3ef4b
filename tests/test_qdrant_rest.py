"""proxy/cli/qdrant_rest.py against the embedded upstream over a real socket, and its three failures."""
from __future__ import annotations

import asyncio
import http.server
import threading
import uuid

import pytest

from proxy.cli.qdrant_rest import QdrantRest, UnreadableAnswer, UpstreamError, UpstreamUnreachable, collection_path
from tests.support import free_port


def run(coroutine):
    return asyncio.run(coroutine)


def test_calls_return_the_result(embedded_upstream, tmp_path):
    name = f"rest_{uuid.uuid4().hex[:8]}"

    async def scenario():
        async with QdrantRest(embedded_upstream + "/") as qdrant:
            assert not await qdrant.exists(name)
            await qdrant.call("PUT", collection_path(name), {"vectors": {"size": 2, "distance": "Dot"}})
            raw = b'{"points":[{"id":1,"vector":[1.0,0.5]},{"id":2,"vector":[0.5,1.0]}]}'
            await qdrant.call("PUT", collection_path(name, "points"), content=raw, wait="true")
            info = await qdrant.info(name)
            counted = await qdrant.count(name)
            snapshot = await qdrant.call("POST", collection_path(name, "snapshots"), wait="true")
            size = await qdrant.download(collection_path(name, "snapshots", snapshot["name"]), tmp_path / "snap")
            await qdrant.call("DELETE", collection_path(name))
            return info, counted, size, await qdrant.aliases()

    info, counted, size, aliases = run(scenario())
    assert info["config"]["params"]["vectors"]["size"] == 2 and counted == 2
    assert size == (tmp_path / "snap").stat().st_size > 0 and isinstance(aliases, dict)


def test_an_error_status_carries_qdrants_message(embedded_upstream):
    async def scenario():
        async with QdrantRest(embedded_upstream) as qdrant:
            await qdrant.info("no_such_collection_here")

    with pytest.raises(UpstreamError) as error:
        run(scenario())
    assert error.value.status == 404 and "doesn't exist" in error.value.message and not error.value.retryable
    assert str(error.value).startswith("GET /collections/no_such_collection_here: 404 ")


def test_no_answer_is_one_line_naming_the_upstream():
    nowhere = f"http://127.0.0.1:{free_port()}"

    async def scenario():
        async with QdrantRest(nowhere) as qdrant:
            await qdrant.call("GET", "/collections")

    with pytest.raises(UpstreamUnreachable) as error:
        run(scenario())
    assert str(error.value).startswith(f"cannot reach the upstream at {nowhere}: ConnectError") and "\n" not in str(error.value)


def test_an_answer_that_is_not_json():
    class NotJson(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotJson)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def scenario():
        async with QdrantRest(f"http://127.0.0.1:{server.server_address[1]}") as qdrant:
            await qdrant.call("GET", "/collections")

    try:
        with pytest.raises(UnreadableAnswer, match="GET /collections: the answer is not JSON"):
            run(scenario())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
