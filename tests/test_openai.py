"""proxy.embedding.openai in process: the OpenAI-shaped backend against the test embedding service on a
real socket (tests/openai_embeddings.py), every way an answer can fail named by its kind."""
from __future__ import annotations

import asyncio
import socket

import pytest

from proxy.embedding.backend import EmbedderError
from proxy.embedding.openai import OpenAIBackend
from routing.config import EmbedderSettings
from tests.openai_embeddings import embedding_service, vector_for


def settings(url: str, **extra) -> EmbedderSettings:
    return EmbedderSettings(type="openai", url=f"{url}/v1", model="m", dimensions=32, **extra)


async def encode_with(mode: dict | None, texts: list[str], **extra):
    """(vectors or the EmbedderError, the requests the service received)."""
    async with embedding_service() as (url, state):
        if mode is not None:
            state.mode = mode
        backend = OpenAIBackend("svc", settings(url, **extra))
        try:
            outcome = await backend.encode(texts)
        except EmbedderError as error:
            outcome = error
        finally:
            await backend.close()
        return outcome, state.requests


def test_vectors_come_back_in_the_order_of_the_texts_whatever_the_order_of_the_answer():
    vectors, requests = asyncio.run(encode_with(None, ["one", "two", "three"]))
    assert vectors == [pytest.approx(vector_for(t, 32), abs=1e-6) for t in ("one", "two", "three")]
    assert requests[0]["body"] == {"input": ["one", "two", "three"], "model": "m", "encoding_format": "float"}


def test_the_key_goes_as_a_bearer_token_and_extra_fields_join_the_request():
    _, requests = asyncio.run(encode_with(None, ["x"], api_key="sk-test", extra={"dimensions": 32}))
    assert requests[0]["headers"]["Authorization"] == "Bearer sk-test"
    assert requests[0]["body"]["dimensions"] == 32


def test_an_error_status_is_kind_status_and_a_quoted_key_is_masked():
    error, _ = asyncio.run(encode_with({"mode": "status", "status": 401, "quote_key": True}, ["x"], api_key="sk-secret"))
    assert isinstance(error, EmbedderError) and error.kind == "status"
    assert "HTTP 401" in str(error) and "sk-secret" not in str(error) and "***" in str(error)


def test_an_answer_not_in_openai_shape_is_kind_response():
    error, _ = asyncio.run(encode_with({"mode": "garbage"}, ["x"]))
    assert isinstance(error, EmbedderError) and error.kind == "response"


def test_a_slow_service_is_kind_timeout_after_the_configured_time():
    error, _ = asyncio.run(encode_with({"mode": "slow", "delay": 1.0}, ["x"], timeout=0.2))
    assert isinstance(error, EmbedderError) and error.kind == "timeout" and "0.2s" in str(error)


def test_an_unreachable_service_is_kind_connect_and_the_url_shows_no_credentials():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario():
        backend = OpenAIBackend("svc", EmbedderSettings(type="openai", url=f"http://user:pw@127.0.0.1:{port}/v1", model="m", dimensions=32))
        try:
            await backend.encode(["x"])
        except EmbedderError as error:
            return error
        finally:
            await backend.close()

    error = asyncio.run(scenario())
    assert error.kind == "connect" and f"127.0.0.1:{port}" in str(error) and "pw" not in str(error)
