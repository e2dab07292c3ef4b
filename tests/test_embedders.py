"""proxy.embedding.embedders in process: batching, the query cache, answer checks and the live set,
against the OpenAI-compatible test service on a real socket and the real WordLlama model."""
from __future__ import annotations

import asyncio

import pytest
from proxy.embedding.backend import EmbedderError
from proxy.embedding.embedders import EmbedderSet, build_embedder
from proxy.metrics import Metrics
from routing.config import EmbedderSettings
from tests.openai_embeddings import embedding_service, vector_for


def openai_settings(url: str, **extra) -> EmbedderSettings:
    return EmbedderSettings(type="openai", url=f"{url}/v1", model="m", dimensions=32, **extra)


def sample(metrics: Metrics, name: str, labels: dict) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_texts_asked_together_share_calls_of_batch_size_and_come_back_in_order():
    texts = [f"text {i}" for i in range(10)]

    async def scenario():
        async with embedding_service() as (url, state):
            embedder = build_embedder("svc", openai_settings(url, batch_size=4, document_prefix="passage: "))
            first, second = await asyncio.gather(embedder.embed(texts[:7], "document"), embedder.embed(texts[7:], "document"))
            await embedder.close()
            return first + second, state.requests

    vectors, requests = asyncio.run(scenario())
    assert vectors == [pytest.approx(vector_for("passage: " + t, 32), abs=1e-6) for t in texts]
    # Both calls' texts were queued in one turn of the loop: 10 texts, batches of at most 4.
    assert sorted(len(r["body"]["input"]) for r in requests) == [2, 4, 4]
    assert sorted(t for r in requests for t in r["body"]["input"]) == sorted("passage: " + t for t in texts)


def test_queries_are_cached_and_a_repeated_text_is_embedded_once():
    async def scenario():
        metrics = Metrics()
        async with embedding_service() as (url, state):
            embedder = build_embedder("svc", openai_settings(url, query_prefix="query: "), metrics)
            once = await embedder.embed(["paris", "paris", "rome"], "query")
            again = await embedder.embed(["paris"], "query")
            await embedder.close()
            return once, again, state.requests, metrics

    once, again, requests, metrics = asyncio.run(scenario())
    assert once[0] == once[1] == again[0]
    assert [r["body"]["input"] for r in requests] == [["query: paris", "query: rome"]]
    assert sample(metrics, "bluegreen_embed_cache_hits_total", {"embedder": "svc"}) == 1


def test_an_answer_of_the_wrong_size_fails_with_kind_dimensions_and_is_counted():
    async def scenario():
        metrics = Metrics()
        async with embedding_service() as (url, state):
            state.mode = {"mode": "wrong_dims"}
            embedder = build_embedder("svc", openai_settings(url), metrics)
            with pytest.raises(EmbedderError) as raised:
                await embedder.embed(["x"], "document")
            await embedder.close()
            return raised.value, metrics

    error, metrics = asyncio.run(scenario())
    assert error.kind == "dimensions"
    assert "answered a 33-dimensional vector, expected 32" in str(error)
    assert sample(metrics, "bluegreen_embed_errors_total", {"embedder": "svc", "kind": "dimensions"}) == 1


def test_a_closed_embedder_refuses_texts():
    async def scenario():
        async with embedding_service() as (url, _):
            embedder = build_embedder("svc", openai_settings(url))
            await embedder.close()
            with pytest.raises(EmbedderError) as raised:
                await embedder.embed(["x"], "query")
            return raised.value

    assert asyncio.run(scenario()).kind == "closed"


def test_the_set_keeps_unchanged_embedders_and_retires_changed_ones():
    async def scenario():
        async with embedding_service() as (url, _):
            embedders = EmbedderSet()
            embedders.apply({"a": openai_settings(url), "b": openai_settings(url)})
            a, b = embedders.get("a"), embedders.get("b")
            embedders.apply({"a": openai_settings(url), "b": openai_settings(url, query_prefix="q: ")})
            kept, replaced = embedders.get("a"), embedders.get("b")
            await asyncio.sleep(0)  # the retiring task runs: nothing was in flight, so it closes at once
            await asyncio.sleep(0)
            with pytest.raises(EmbedderError):
                await b.embed(["x"], "query")
            fresh = await replaced.embed(["x"], "query")
            await embedders.close()
            return a, kept, b, replaced, fresh

    a, kept, b, replaced, fresh = asyncio.run(scenario())
    assert kept is a
    assert replaced is not b and replaced.settings.query_prefix == "q: "
    assert fresh[0] == pytest.approx(vector_for("q: x", 32), abs=1e-6)


def test_a_local_model_embeds_off_the_event_loop_with_its_dimensions():
    async def scenario():
        embedder = build_embedder("small", EmbedderSettings(type="local", model="wordllama-256"))
        await embedder.warm()
        vectors = await embedder.embed(["a cat on a mat", "a dog in the fog"], "document")
        await embedder.close()
        return vectors

    vectors = asyncio.run(scenario())
    assert [len(v) for v in vectors] == [256, 256]
    assert vectors[0] != vectors[1]
