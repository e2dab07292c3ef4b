"""proxy.dataplane.responses: Qdrant's envelope and the CORS headers of the proxy's own answers."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from proxy.dataplane.responses import (
    ResponseBroken, colour_headers, cors_headers, error_body, exposing_colour_headers, ok_body, respond, respond_error,
)

EXPOSED = b"x-bluegreen-color, x-bluegreen-collection"


def test_envelopes_are_qdrants():
    started = time.perf_counter()
    assert set(json.loads(error_body("Wrong input: x", started))) == {"status", "time"}
    assert json.loads(error_body("Wrong input: x", started))["status"] == {"error": "Wrong input: x"}
    document = json.loads(ok_body({"color": "blue"}, started))
    assert document["status"] == "ok" and document["result"] == {"color": "blue"} and document["time"] >= 0


def test_cors_only_for_a_browser():
    assert cors_headers(None) == []
    assert dict(cors_headers(b"https://a.example")) == {
        b"access-control-allow-origin": b"https://a.example", b"vary": b"origin", b"access-control-expose-headers": EXPOSED,
    }


@pytest.mark.parametrize("upstream, exposed", [
    ([], EXPOSED),
    ([(b"Access-Control-Expose-Headers", b"x-request-id")], b"x-request-id, " + EXPOSED),
    ([(b"access-control-expose-headers", b"*")], b"*"),
    ([(b"access-control-expose-headers", b"")], EXPOSED),
])
def test_the_colour_headers_join_what_the_upstream_exposes(upstream, exposed):
    headers = exposing_colour_headers([(b"content-type", b"application/json"), *upstream])
    values = [value for name, value in headers if name.lower() == b"access-control-expose-headers"]
    assert values == [exposed]


def test_respond_sends_one_answer_with_its_length():
    sent = []

    async def send(message):
        sent.append(message)

    asyncio.run(respond_error(send, 401, "Unauthorized: x", time.perf_counter(), b"https://a.example", colour_headers("green", "docs_v2")))
    start, body = sent
    headers = dict(start["headers"])
    assert start["status"] == 401 and headers[b"content-length"] == str(len(body["body"])).encode()
    assert headers[b"x-bluegreen-color"] == b"green" and headers[b"access-control-allow-origin"] == b"https://a.example"


def test_a_refused_send_is_a_broken_response():
    async def send(message):
        raise RuntimeError("client gone")

    with pytest.raises(ResponseBroken):
        asyncio.run(respond(send, 200, [], b"{}"))
