"""proxy.dataplane.inference in process: a request's Documents found once (a REST body or a gRPC
message), each colour's body with its own model's vectors (the real WordLlama model for blue, the
OpenAI-compatible test service for green), raw vectors pinned to the colour whose size they fit, and
embedder failures as that colour's failure."""
from __future__ import annotations

import asyncio
import json

import pytest

from proxy.dataplane.inference import EmbedFailure, TextInference
from proxy.dataplane.live import Snapshot
from proxy.dataplane.request import Request
from proxy.embedding.embedders import EmbedderSet
from proxy.grpc_schema import points_pb2
from proxy.metrics import Metrics
from routing.config import parse_config
from routing.operations import classify
from routing.table import canonical_path, split_collection_path
from tests.openai_embeddings import embedding_service, vector_for


def config(service_url: str) -> str:
    return f"""\
upstream: {{url: 'http://127.0.0.1:1'}}
embedders:
  small: {{type: local, model: wordllama-256}}
  svc: {{type: openai, url: '{service_url}/v1', model: m, dimensions: 32, query_prefix: 'query: ', document_prefix: 'passage: '}}
routes:
  docs: {{blue: docs_v1, green: docs_v2, green_percent: 50, embed: {{blue: small, green: svc}}}}
"""


def routed(snapshot: Snapshot, method: str, path: bytes, body: dict) -> Request:
    request = Request(method, path, b"", {}, [], json.dumps(body).encode(), 0.0, snapshot, 0.0)
    request.canonical = canonical_path(path)
    located = split_collection_path(request.canonical)
    request.route = snapshot.table.lookup(located[0])
    request.operation, request.kind = classify(method, located[1])
    return request


async def with_inference(scenario):
    async with embedding_service() as (url, state):
        snapshot = Snapshot.of(parse_config(config(url), environ={}), 1, "h")
        embedders = EmbedderSet()
        for warming in embedders.apply(snapshot.config.embedders).values():
            await warming
        try:
            return await scenario(TextInference(embedders, Metrics()), snapshot, state)
        finally:
            await embedders.close()


def test_a_text_query_gets_each_colours_own_embedding_with_its_prefix():
    async def scenario(inference, snapshot, _):
        request = routed(snapshot, "POST", b"/collections/docs/points/query",
                         {"query": {"text": "where is Paris", "model": "any"}, "limit": 3})
        assert inference.prepare(request) is None  # text only: nothing pins it
        return [json.loads(await inference.body_for(request, colour)) for colour in ("blue", "green")]

    blue, green = asyncio.run(with_inference(scenario))
    assert len(blue["query"]) == 256 and blue["limit"] == 3
    assert green["query"] == pytest.approx(vector_for("query: where is Paris", 32), abs=1e-6)


def test_a_text_upsert_embeds_documents_with_the_document_prefix():
    async def scenario(inference, snapshot, state):
        request = routed(snapshot, "PUT", b"/collections/docs/points",
                         {"points": [{"id": 1, "vector": {"text": "Paris is in France", "model": "any"}, "payload": {"k": 1}}]})
        inference.prepare(request)
        body = json.loads(await inference.body_for(request, "green"))
        return body, state.requests

    body, requests = asyncio.run(with_inference(scenario))
    assert body["points"][0]["vector"] == pytest.approx(vector_for("passage: Paris is in France", 32), abs=1e-6)
    assert body["points"][0]["payload"] == {"k": 1}
    assert requests[0]["body"]["input"] == ["passage: Paris is in France"]


def test_a_raw_vector_is_pinned_to_the_colour_whose_size_it_fits():
    async def scenario(inference, snapshot, _):
        fits_green = routed(snapshot, "POST", b"/collections/docs/points/query", {"query": [0.1] * 32})
        fits_blue = routed(snapshot, "POST", b"/collections/docs/points/query", {"query": [0.1] * 256})
        return inference.prepare(fits_green), inference.prepare(fits_blue)

    assert asyncio.run(with_inference(scenario)) == ("green", "blue")


def test_a_failing_embedder_is_that_colours_failure():
    async def scenario(inference, snapshot, state):
        state.mode = {"mode": "status", "status": 500}
        request = routed(snapshot, "POST", b"/collections/docs/points/query", {"query": {"text": "x", "model": "any"}})
        inference.prepare(request)
        with pytest.raises(EmbedFailure) as raised:
            await inference.body_for(request, "green")
        blue = await inference.body_for(request, "blue")  # blue's model is unaffected
        return raised.value, json.loads(blue)

    failure, blue = asyncio.run(with_inference(scenario))
    assert failure.kind == "embedder" and "answered HTTP 500" in failure.detail and "(route docs, green)" in failure.detail
    assert len(blue["query"]) == 256


def test_a_grpc_message_gets_each_colours_own_embedding_and_its_raw_vectors_pin_it():
    def query(nearest: points_pb2.VectorInput) -> points_pb2.QueryPoints:
        return points_pb2.QueryPoints(collection_name="docs", query=points_pb2.Query(nearest=nearest))

    async def scenario(inference, snapshot, _):
        route, passthrough = snapshot.table.routes["docs"], snapshot.config.passthrough_models
        message = query(points_pb2.VectorInput(document=points_pb2.Document(text="where is Paris", model="any")))
        found, pinned = inference.prepare_message(route, "query", message, passthrough)
        assert pinned is None  # text only: nothing pins it
        embedded = {}
        for colour in ("blue", "green"):  # one parsed message, each colour's vectors in turn
            found.fill(await inference.embeddings(found, route, "query", colour))
            embedded[colour] = list(points_pb2.QueryPoints.FromString(message.SerializeToString()).query.nearest.dense.data)
        fits_green = query(points_pb2.VectorInput(dense=points_pb2.DenseVector(data=[0.1] * 32)))
        fits_neither = query(points_pb2.VectorInput(dense=points_pb2.DenseVector(data=[0.1] * 5)))
        pins = [inference.prepare_message(route, "query", each, passthrough) for each in (fits_green, fits_neither)]
        return embedded, pins

    embedded, pins = asyncio.run(with_inference(scenario))
    assert len(embedded["blue"]) == 256
    assert embedded["green"] == pytest.approx(vector_for("query: where is Paris", 32), abs=1e-6)
    assert pins == [(None, "green"), (None, "blue")]  # a length that fits neither goes to blue
