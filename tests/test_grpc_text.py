"""Text in and size pinning over gRPC: qdrant-client 1.20 (prefer_grpc=True, cloud_inference=True, sending
`models.Document`) and raw stubs against a proxy process's gRPC listener in front of the embedded
upstream's gRPC face; blue on the local MiniLM (384 dims), green on WordLlama (256). Each answer is
compared with the same request over REST, and stored vectors with the text embedded here by that
colour's model."""
from __future__ import annotations

import asyncio
import math
import socket
import uuid

import grpc
import httpx
import pytest
from qdrant_client import grpc as qgrpc
from qdrant_client import models

from proxy.embedding.embedders import build_embedder
from routing.config import EmbedderSettings
from tests.support import free_port, metric_value, qdrant_client, qdrant_grpc_client, start_embedded_upstream, wait_until
from tests.test_embed import SENTENCES
from tests.test_grpc_face import Face, initial
from tests.test_shadow import shadow_results

pytestmark = pytest.mark.slow  # an upstream, a proxy and two local models

SIZES = {"blue": 384, "green": 256}
MODELS = {"blue": "all-MiniLM-L6-v2", "green": "wordllama-256"}


def document(text: str) -> models.Document:
    return models.Document(text=text, model="sentence-transformers/all-minilm-l6-v2")  # not looked up: the colour decides


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(face, direct REST client to the upstream, names): routes `text` (unnamed vector) and `named`
    (`dense`) at 50 % with `writes: both`; `down` and `stalled` (green's embedder unreachable / never
    answering, green at 100 %); `sized` (no embed: pinned by the sizes preflight reads, 4 vs 6);
    `shadowed` (as `text`, every read shadowed)."""
    grpc_port = free_port()
    server, url = start_embedded_upstream(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"), grpc_port=grpc_port)
    stalled = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel's backlog) and never answers
    tag = uuid.uuid4().hex[:6]
    names = {logical: f"{logical}_{tag}" for logical in ("text", "named", "down", "stalled", "sized", "shadowed")}
    direct = qdrant_client(url, timeout=30)
    for logical, name in names.items():
        for colour in ("blue", "green"):
            if logical == "sized":
                size = 4 if colour == "blue" else 6
                direct.create_collection(f"{name}_{colour}", vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE))
                direct.upsert(f"{name}_{colour}", [
                    models.PointStruct(id=i, vector=[float(i == j) + 0.01 for j in range(size)]) for i in range(1, 4)
                ], wait=True)
                continue
            params = models.VectorParams(size=SIZES[colour], distance=models.Distance.COSINE)
            direct.create_collection(f"{name}_{colour}", vectors_config={"dense": params} if logical == "named" else params)
    embedders = (
        "embedders:\n"
        "  minilm: {type: local, model: all-MiniLM-L6-v2}\n"
        "  small: {type: local, model: wordllama-256}\n"
        f"  down: {{type: openai, url: 'http://127.0.0.1:{free_port()}/v1', model: m, dimensions: 256}}\n"
        f"  stalled: {{type: openai, url: 'http://127.0.0.1:{stalled.getsockname()[1]}/v1', model: m, dimensions: 256, timeout: 1s}}\n"
    )

    def route(logical: str, percent: int, embed: str) -> str:
        name = names[logical]
        return (f"  {name}: {{blue: {name}_blue, green: {name}_green, green_percent: {percent}, writes: both, "
                f"key: ['header:x-user-id'], allow_override: true{embed}}}\n")

    routes = (
        route("text", 50, ", embed: {blue: minilm, green: small}")
        + route("named", 50, ", embed: {blue: {dense: minilm}, green: {dense: small}}")
        + route("down", 100, ", embed: {blue: minilm, green: down}")
        + route("stalled", 100, ", embed: {blue: minilm, green: stalled}")
        + route("sized", 50, ", preflight: {max_count_drift: 1, recheck: 1s}")
        + route("shadowed", 50, ", embed: {blue: minilm, green: small}, shadow: {sample: 1.0}")
    )
    face = Face(tmp_path_factory.mktemp("proxy"), (url, grpc_port), routes, extra_yaml=embedders).__enter__()
    client = text_client(face)
    for logical in ("text", "shadowed"):
        client.upsert(names[logical], [
            models.PointStruct(id=i, vector=document(text), payload={"text": text, "n": i}) for i, text in enumerate(SENTENCES)
        ], wait=True)
    client.close()
    yield face, direct, names
    face.__exit__(None, None, None)
    direct.close()
    stalled.close()
    server.stop()


def text_client(face: Face, **headers):
    return qdrant_grpc_client(face.proxy.url, face.grpc_port, cloud_inference=True, timeout=60, headers=headers or None)


def embedded_here(colour: str, texts: list[str]) -> list[list[float]]:
    """`texts` embedded in this process by `colour`'s model, as documents."""
    async def embed():
        embedder = build_embedder(colour, EmbedderSettings(type="local", model=MODELS[colour]))
        try:
            return await embedder.embed(texts, "document")
        finally:
            await embedder.close()

    return asyncio.run(embed())


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def key_of(face: Face, route: str, colour: str) -> str:
    """A key the split sends to `colour` (asked of the proxy itself)."""
    for user in range(200):
        answer = httpx.get(f"{face.proxy.url}/bluegreen/routes/{route}/color", headers={"x-user-id": f"user-{user}"}, timeout=10)
        if answer.json()["result"]["color"] == colour:
            return f"user-{user}"
    raise AssertionError(f"no key for {colour}")


def raw_query(face: Face, route: str, nearest: qgrpc.VectorInput, *metadata: tuple[str, str], **options):
    request = qgrpc.QueryPoints(collection_name=route, query=qgrpc.Query(nearest=nearest), limit=3,
                                with_payload=qgrpc.WithPayloadSelector(enable=True))
    return face.points.Query.with_call(request, metadata=list(metadata), timeout=options.pop("timeout", 60))


def test_a_text_upsert_with_writes_both_stores_each_colours_own_embedding(setup):
    face, direct, names = setup
    for colour in ("blue", "green"):
        stored = sorted(direct.retrieve(f"{names['text']}_{colour}", list(range(len(SENTENCES))), with_vectors=True, with_payload=True),
                        key=lambda point: point.id)
        assert [point.payload["text"] for point in stored] == SENTENCES
        expected = embedded_here(colour, SENTENCES)
        assert all(len(point.vector) == SIZES[colour] for point in stored)
        assert min(cosine(point.vector, vector) for point, vector in zip(stored, expected)) > 0.9999, colour
    # Named vectors (the `vectors` map's key names the vector): each colour its own model for `dense`.
    client = text_client(face)
    client.upsert(names["named"], [models.PointStruct(id=1, vector={"dense": document(SENTENCES[3])})], wait=True)
    client.update_vectors(names["named"], [models.PointVectors(id=1, vector={"dense": document(SENTENCES[5])})], wait=True)
    client.close()
    for colour in ("blue", "green"):
        [point] = direct.retrieve(f"{names['named']}_{colour}", [1], with_vectors=True)
        assert cosine(point.vector["dense"], embedded_here(colour, [SENTENCES[5]])[0]) > 0.9999, colour
    metrics = face.proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_requests_total", route=names["text"], operation="upsert", protocol="grpc", status="2xx") == 2
    assert metric_value(metrics, "bluegreen_embed_texts_total", embedder="small") >= len(SENTENCES) + 2


def test_a_text_query_over_grpc_gets_the_points_rest_gets_for_the_same_key(setup):
    face, _, names = setup
    logical = names["text"]
    for colour in ("blue", "green"):
        key = key_of(face, logical, colour)
        over_grpc = text_client(face, **{"x-user-id": key})
        over_rest = qdrant_client(face.proxy.url, cloud_inference=True, timeout=60, headers={"x-user-id": key})
        for index in (0, 4, 9):
            text = SENTENCES[index]
            points = over_grpc.query_points(logical, query=document(text), limit=3, with_payload=True).points
            twins = over_rest.query_points(logical, query=document(text), limit=3, with_payload=True).points
            assert [(p.id, p.payload) for p in points] == [(p.id, p.payload) for p in twins]
            assert [p.score for p in points] == pytest.approx([p.score for p in twins], abs=1e-4)
            assert points[0].id == index and points[0].score > 0.99  # the exact sentence, by this colour's own model
        prefetched = over_grpc.query_points(logical, prefetch=[
            models.Prefetch(query=document(SENTENCES[2]), limit=5),
            models.Prefetch(query=models.NearestQuery(nearest=document("the French capital city")), limit=5),
        ], query=models.FusionQuery(fusion=models.Fusion.RRF), limit=3).points
        assert prefetched[0].id == 2
        over_grpc.close()
        over_rest.close()
        response, call = raw_query(face, logical, qgrpc.VectorInput(document=qgrpc.Document(text=SENTENCES[7], model="m")), ("x-user-id", key))
        assert initial(call)["x-bluegreen-color"] == colour and response.result[0].id.num == 7


def test_the_shadow_of_a_text_query_is_embedded_with_the_other_colours_model(setup):
    """A shadow sent with the answered colour's embedding would not fit the other colour's collection
    (384 against 256 dimensions) and count as an error; one sent to the answered colour's collection
    would agree in full, but green lacks point 8 here, so the pairs for sentence 8 cannot."""
    face, direct, names = setup
    logical = names["shadowed"]
    direct.delete(f"{logical}_green", points_selector=[8], wait=True)
    for colour in ("blue", "green"):
        key = key_of(face, logical, colour)
        for index in (1, 5, 8):
            response, call = raw_query(face, logical, qgrpc.VectorInput(document=qgrpc.Document(text=SENTENCES[index], model="m")),
                                       ("x-user-id", key))
            assert initial(call)["x-bluegreen-color"] == colour
            assert (response.result[0].id.num == index) == (colour == "blue" or index != 8)  # each colour's own model

    wait_until(lambda: shadow_results(face.proxy, logical)["compared"] == 6, timeout=30)
    assert shadow_results(face.proxy, logical) == {"compared": 6, "skipped": 0, "dropped": 0, "error": 0}
    metrics = face.proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_shadow_overlap_count", route=logical) == 6
    # Four pairs find the same first point at least; the two for sentence 8 differ in it.
    assert 4 / 3 <= metric_value(metrics, "bluegreen_shadow_overlap_sum", route=logical) <= 6 - 2 * (1 / 3)


def test_a_raw_vector_pins_the_grpc_call_to_the_colour_its_length_fits(setup):
    face, direct, names = setup
    logical = names["text"]
    before = face.proxy.metrics_text()
    for colour, other in (("green", "blue"), ("blue", "green")):
        [point] = direct.retrieve(f"{logical}_{colour}", [4], with_vectors=True)
        key = key_of(face, logical, other)  # the split would send this key to the other colour
        response, call = raw_query(face, logical, qgrpc.VectorInput(dense=qgrpc.DenseVector(data=point.vector)), ("x-user-id", key))
        assert (initial(call)["x-bluegreen-color"], response.result[0].id.num) == (colour, 4)
    with pytest.raises(grpc.RpcError) as raised:  # fits neither: blue answers Qdrant's dimension error
        raw_query(face, logical, qgrpc.VectorInput(dense=qgrpc.DenseVector(data=[0.1] * 100)), ("x-user-id", "k"))
    assert dict(raised.value.initial_metadata())["x-bluegreen-color"] == "blue"
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension" in raised.value.details().lower()
    # A raw write (an application not yet on text) lands on the one colour it fits, acknowledged.
    client = text_client(face)
    client.upsert(logical, [models.PointStruct(id=500, vector=[0.5] * 256, payload={"raw": True})], wait=True)
    client.close()
    assert direct.retrieve(f"{logical}_green", [500])[0].payload == {"raw": True}
    assert direct.retrieve(f"{logical}_blue", [500]) == []
    after = face.proxy.metrics_text()

    def pinned(colour: str) -> float:
        return (metric_value(after, "bluegreen_pinned_total", route=logical, color=colour)
                - metric_value(before, "bluegreen_pinned_total", route=logical, color=colour))

    assert (pinned("blue"), pinned("green")) == (2, 2)


def test_a_raw_vector_is_pinned_by_the_sizes_preflight_read_on_a_route_without_embed(setup):
    face, _, names = setup
    logical = names["sized"]
    wait_until(lambda: (face.proxy.admin_json()["routes"][logical]["preflight"] or {}).get("ok") is True, timeout=20)
    for user in range(6):  # at 50 % some keys are each colour's by the split: the length decides
        for vector, colour, point in (([0.0, 1.0, 0.0, 0.0], "blue", 1), ([0.0, 0.0, 1.0, 0.0, 0.0, 0.0], "green", 2)):
            response, call = raw_query(face, logical, qgrpc.VectorInput(dense=qgrpc.DenseVector(data=vector)), ("x-user-id", f"u{user}"))
            assert (initial(call)["x-bluegreen-color"], response.result[0].id.num) == (colour, point)
    assert metric_value(face.proxy.metrics_text(), "bluegreen_pinned_total", route=logical) == 12


def test_an_embedder_failure_is_a_grpc_status_with_the_message_and_the_colours_failure(setup):
    face, direct, names = setup
    text = qgrpc.VectorInput(document=qgrpc.Document(text=SENTENCES[2], model="m"))
    for logical, code, words in (
        (names["down"], grpc.StatusCode.UNAVAILABLE, "Embedding failed: embedder `down` is unreachable at http://127.0.0.1:"),
        (names["stalled"], grpc.StatusCode.DEADLINE_EXCEEDED, "Embedding failed: embedder `stalled` timed out after 1s"),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            raw_query(face, logical, text, ("x-bluegreen-color", "green"))  # a forced colour is never failed over
        assert raised.value.code() == code and words in raised.value.details() and f"(route {logical}, green)" in raised.value.details()
        assert dict(raised.value.initial_metadata())["x-bluegreen-color"] == "green"
        # Green's model failing: the read fails over to blue, embedded with blue's model.
        response, call = raw_query(face, logical, text)
        assert initial(call)["x-bluegreen-color"] == "blue" and len(response.result) == 0  # (blue is empty)
        # A dual write is not acknowledged when green's model fails.
        client = text_client(face)
        with pytest.raises(Exception) as refused:
            client.upsert(logical, [models.PointStruct(id=9, vector=document("not acknowledged"))], wait=True)
        client.close()
        assert code.name in str(refused.value) and words in str(refused.value)
        assert direct.retrieve(f"{logical}_green", [9]) == []
        metrics = face.proxy.metrics_text()
        failed = metric_value(metrics, "bluegreen_requests_total", route=logical, color="green", protocol="grpc", status="5xx")
        assert failed == 3
    assert metric_value(face.proxy.metrics_text(), "bluegreen_failovers_total", route=names["down"]) == 1
