"""proxy.dataplane.body: the one body reader (the data port's and the admin port's)."""
from __future__ import annotations

import asyncio

import pytest

from proxy.dataplane.body import BodyTooLarge, ClientGone, read_body


def receiving(*messages):
    queue = list(messages)

    async def receive():
        return queue.pop(0)

    return receive


def read(headers, *messages, limit=10):
    return asyncio.run(read_body({"headers": headers}, receiving(*messages), limit))


def test_a_body_in_one_message_or_many():
    assert read([], {"type": "http.request", "body": b"abc"}) == b"abc"
    parts = [{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"cd"}]
    assert read([], *parts) == b"abcd"


def test_too_large_declared_or_streamed():
    with pytest.raises(BodyTooLarge) as declared:
        read([(b"content-length", b"11")])
    assert declared.value.limit == 10
    with pytest.raises(BodyTooLarge):
        read([], {"type": "http.request", "body": b"123456", "more_body": True}, {"type": "http.request", "body": b"12345"})
    with pytest.raises(BodyTooLarge):
        read([], {"type": "http.request", "body": b"x" * 11})


def test_a_client_gone_mid_body():
    with pytest.raises(ClientGone):
        read([], {"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.disconnect"})
