"""Text in, each colour's own vectors out: the real qdrant-client (`cloud_inference=True`, `models.Document`)
-> proxy process -> embedded upstream, blue on the local MiniLM (384) and green on WordLlama (256);
an OpenAI-compatible service (tests/openai_embeddings.py) for `type: openai`; the echo upstream where
the exact bytes sent up matter."""
from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
import time
import uuid

import aiohttp
import httpx
import pytest
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.openai_embeddings import vector_for
from tests.support import RunningProxy, ServerProcess, free_port, metric_value, qdrant_client, start_echo_upstream, wait_until

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "Quantum computers use qubits that can be in superposition.",
    "Paris is the capital and largest city of France.",
    "Bananas are a good source of potassium.",
    "The stock market fell sharply after the announcement.",
    "Photosynthesis turns sunlight into chemical energy in plants.",
    "A marathon is a long-distance race of about 42 kilometres.",
    "The violinist played a haunting melody at the concert.",
    "Volcanic eruptions can cool the global climate for years.",
    "He repaired the bicycle's flat tyre with a patch kit.",
    "Whales communicate with complex songs across the ocean.",
    "The library lends e-books as well as printed books.",
]
LOCAL_EMBEDDERS = (
    "embedders:\n"
    "  minilm: {type: local, model: all-MiniLM-L6-v2}\n"
    "  small: {type: local, model: wordllama-256}\n"
)
FAST_GUARD = (
    "{interval: 200ms, window: 2s, min_requests: 20, error_for: 600ms, latency_for: 600ms, "
    "empty_for: 600ms, max_latency_ratio: 50.0, max_error_rate: 0.05, max_empty_excess: 0.05}"
)


def text_client(url: str, **headers):
    return qdrant_client(url, cloud_inference=True, timeout=30, headers=headers or None)


def document(text: str) -> models.Document:
    # The client's model name is not looked up: each colour's configured model embeds it.
    return models.Document(text=text, model="sentence-transformers/all-minilm-l6-v2")


def colour_of(proxy_url: str, logical: str, body: dict, user: str) -> tuple[int, str | None, dict]:
    response = httpx.post(f"{proxy_url}/collections/{logical}/points/query", json=body, headers={"x-user-id": user}, timeout=30)
    return response.status_code, response.headers.get("x-bluegreen-color"), response.json()


# ---------------------------------------------------------------- local models, one proxy for the module


@pytest.fixture(scope="module")
def local(embedded_upstream, tmp_path_factory):
    """A proxy with two embed routes over the embedded upstream: `plain` (one unnamed vector) and `named`
    (a `dense` vector), both at 50 % with `writes: both`."""
    tag = uuid.uuid4().hex[:8]
    names = {"plain": f"plain_{tag}", "named": f"named_{tag}"}
    direct = qdrant_client(embedded_upstream, timeout=30)
    for logical in names.values():
        for colour, size in (("blue", 384), ("green", 256)):
            params = models.VectorParams(size=size, distance=models.Distance.COSINE)
            direct.create_collection(f"{logical}_{colour}", vectors_config={"dense": params} if logical.startswith("named") else params)
    routes = "".join(
        f"  {logical}:\n    blue: {logical}_blue\n    green: {logical}_green\n    green_percent: 50\n    writes: both\n"
        f"    embed: {embed}\n"
        for logical, embed in (
            (names["plain"], "{blue: minilm, green: small}"),
            (names["named"], "{blue: {dense: minilm}, green: {dense: small}}"),
        )
    )
    # A generous timeout: a 160-text MiniLM upsert on a loaded 2-core machine can take more than 10 s.
    proxy = RunningProxy(tmp_path_factory.mktemp("embed-proxy"), embedded_upstream, routes, LOCAL_EMBEDDERS,
                         upstream_options="timeout: 120s").start()
    client = text_client(proxy.url)
    client.upsert(names["plain"], [
        models.PointStruct(id=i, vector=document(text), payload={"text": text, "n": i}) for i, text in enumerate(SENTENCES)
    ], wait=True)
    yield proxy, names, direct
    proxy.stop()
    direct.close()


def test_text_upsert_with_writes_both_stores_each_colours_own_vectors(local):
    proxy, names, direct = local
    logical = names["plain"]
    blue = direct.retrieve(f"{logical}_blue", [0, 1], with_vectors=True, with_payload=True)
    green = direct.retrieve(f"{logical}_green", [0, 1], with_vectors=True, with_payload=True)
    assert [len(p.vector) for p in blue] == [384, 384]
    assert [len(p.vector) for p in green] == [256, 256]
    assert all(abs(sum(v * v for v in p.vector) - 1) < 1e-3 for p in blue + green)  # both models' outputs are unit vectors
    assert blue[0].payload == green[0].payload == {"text": SENTENCES[0], "n": 0}  # payload as sent
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_embed_texts_total", embedder="minilm") >= len(SENTENCES)
    assert metric_value(metrics, "bluegreen_embed_texts_total", embedder="small") >= len(SENTENCES)
    assert metric_value(metrics, "bluegreen_embed_duration_seconds_count", embedder="minilm") >= 1


def test_text_queries_at_50_percent_reach_both_colours_and_find_the_exact_sentence_first(local):
    proxy, names, _ = local
    logical = names["plain"]
    before = proxy.metrics_text()
    colours = set()
    for user in range(24):
        text = SENTENCES[user % len(SENTENCES)]
        client = text_client(proxy.url, **{"x-user-id": f"user-{user}"})
        points = client.query_points(logical, query=document(text), limit=3, with_payload=True).points
        client.close()
        assert points[0].id == user % len(SENTENCES) and points[0].payload["text"] == text
        assert points[0].score > 0.99
        _, colour, answer = colour_of(proxy.url, logical, {"query": {"nearest": {"text": text, "model": "m"}}, "limit": 1}, f"user-{user}")
        assert answer["result"]["points"][0]["id"] == user % len(SENTENCES)
        colours.add(colour)
    assert colours == {"blue", "green"}
    after = proxy.metrics_text()
    for colour in ("blue", "green"):
        served = metric_value(after, "bluegreen_requests_total", route=logical, color=colour, operation="query", status="2xx")
        assert served > metric_value(before, "bluegreen_requests_total", route=logical, color=colour, operation="query", status="2xx")
    # The same query text again is answered from each model's cache.
    assert metric_value(after, "bluegreen_embed_cache_hits_total", embedder="minilm") > 0
    assert metric_value(after, "bluegreen_embed_cache_hits_total", embedder="small") > 0


def test_prefetch_recommend_and_batch_query_forms(local):
    proxy, names, _ = local
    logical = names["plain"]
    for user in ("alice", "bob", "carol", "dave"):
        client = text_client(proxy.url, **{"x-user-id": user})
        fused = client.query_points(logical, prefetch=[
            models.Prefetch(query=document(SENTENCES[2]), limit=5),
            models.Prefetch(query=models.NearestQuery(nearest=document("the French capital city")), limit=5),
        ], query=models.FusionQuery(fusion=models.Fusion.RRF), limit=3).points
        assert fused[0].id == 2
        recommended = client.query_points(
            logical, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[document(SENTENCES[5])])), limit=1,
        ).points
        assert recommended[0].id == 5
        answers = client.query_batch_points(logical, [
            models.QueryRequest(query=document(SENTENCES[7]), limit=1),
            models.QueryRequest(query=models.NearestQuery(nearest=document(SENTENCES[9])), limit=1),
        ])
        assert [a.points[0].id for a in answers] == [7, 9]
        client.close()


def test_named_vectors_batch_upsert_and_update_vectors(local):
    proxy, names, direct = local
    logical = names["named"]
    client = text_client(proxy.url)
    client.upsert(logical, models.Batch(ids=[1, 2], vectors={"dense": [document(SENTENCES[0]), document(SENTENCES[1])]}), wait=True)
    client.update_vectors(logical, [models.PointVectors(id=2, vector={"dense": document(SENTENCES[3])})], wait=True)
    for colour, size in (("blue", 384), ("green", 256)):
        points = direct.retrieve(f"{logical}_{colour}", [1, 2], with_vectors=True)
        assert [len(p.vector["dense"]) for p in points] == [size, size]
    for user in ("erin", "frank", "grace", "heidi"):
        user_client = text_client(proxy.url, **{"x-user-id": user})
        hit = user_client.query_points(logical, query=document(SENTENCES[3]), using="dense", limit=1).points[0]
        assert hit.id == 2  # its vector was replaced by the text of sentence 3
        user_client.close()
    client.close()


def test_raw_vectors_are_pinned_to_the_colour_their_length_fits(local):
    proxy, names, direct = local
    logical = names["plain"]
    blue_vector = direct.retrieve(f"{logical}_blue", [4], with_vectors=True)[0].vector
    green_vector = direct.retrieve(f"{logical}_green", [4], with_vectors=True)[0].vector
    before = proxy.metrics_text()
    for user in range(10):  # at 50 % some of these keys are green's, some blue's: the length decides
        status, colour, answer = colour_of(proxy.url, logical, {"query": blue_vector, "limit": 1}, f"key-{user}")
        assert (status, colour, answer["result"]["points"][0]["id"]) == (200, "blue", 4)
        status, colour, answer = colour_of(proxy.url, logical, {"query": green_vector, "limit": 1}, f"key-{user}")
        assert (status, colour, answer["result"]["points"][0]["id"]) == (200, "green", 4)
    status, colour, answer = colour_of(proxy.url, logical, {"query": [0.1] * 100, "limit": 1}, "key-x")
    assert (status, colour) == (400, "blue") and "dimension" in answer["status"]["error"].lower()
    after = proxy.metrics_text()
    assert metric_value(after, "bluegreen_pinned_total", route=logical, color="blue") - metric_value(before, "bluegreen_pinned_total", route=logical, color="blue") == 11
    assert metric_value(after, "bluegreen_pinned_total", route=logical, color="green") - metric_value(before, "bluegreen_pinned_total", route=logical, color="green") == 10
    # A raw write an application that has not moved to text still makes lands on blue alone, acknowledged.
    client = text_client(proxy.url)
    client.upsert(logical, [models.PointStruct(id=500, vector=blue_vector, payload={"raw": True})], wait=True)
    assert direct.retrieve(f"{logical}_blue", [500])[0].payload == {"raw": True}
    assert direct.retrieve(f"{logical}_green", [500]) == []
    client.close()


@pytest.mark.slow  # 160 texts through MiniLM
def test_a_raw_vector_request_answers_while_a_batch_of_texts_embeds(local):
    """MiniLM runs in a worker thread: a raw-vector query is not held up behind a big text upsert."""
    proxy, names, direct = local
    logical = names["plain"]
    raw = direct.retrieve(f"{logical}_blue", [4], with_vectors=True)[0].vector
    # Longer texts (about 100 tokens each) keep MiniLM busy for a while.
    texts = [f"Variation {i}: " + " ".join(SENTENCES[i % 3:i % 3 + 6]) for i in range(160)]
    upsert = {"points": [{"id": 1000 + i, "vector": {"text": t, "model": "m"}} for i, t in enumerate(texts)]}

    async def run() -> tuple[float, list[float], float]:
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()

            async def write() -> float:
                async with session.put(f"{proxy.url}/collections/{logical}/points?wait=true", json=upsert,
                                       timeout=aiohttp.ClientTimeout(total=120)) as response:
                    assert response.status == 200, await response.text()
                return time.perf_counter() - started

            writing = asyncio.create_task(write())
            latencies = []
            await asyncio.sleep(0.3)  # the upsert's texts are in the model now
            while not writing.done() and len(latencies) < 40:
                sent = time.perf_counter()
                async with session.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": raw, "limit": 1}) as response:
                    assert response.status == 200
                    await response.read()
                latencies.append(time.perf_counter() - sent)
                await asyncio.sleep(0.02)
            answered_at = time.perf_counter() - started
            return await writing, latencies, answered_at

    before = proxy.metrics_text()
    write_seconds, latencies, answered_at = asyncio.run(run())
    after = proxy.metrics_text()
    assert write_seconds > 0.5, "the text upsert was too quick to overlap anything"
    assert len(latencies) >= 5 and answered_at < write_seconds  # answered while the texts were embedding
    # Held behind MiniLM, a query sent during a batch would wait for the rest of it: half a batch at the
    # median. Measured against the proxy's own batch time on the same (possibly loaded) machine, not a
    # wall-time threshold.
    batches = [metric_value(text, "bluegreen_embed_duration_seconds_" + part, embedder="minilm")
               for part in ("sum", "count") for text in (after, before)]
    batch_seconds = (batches[0] - batches[1]) / (batches[2] - batches[3])
    latencies.sort()
    assert latencies[len(latencies) // 2] < batch_seconds / 4, (batch_seconds, latencies)


# ---------------------------------------------------------------- exact bytes up (echo upstream)


@pytest.fixture(scope="module")
def echo_proxy(tmp_path_factory):
    """Routes over the echo upstream: `docs` (0 % green, `writes: both`) and `gdocs` (all green)."""
    logs = tmp_path_factory.mktemp("echo")
    echo, echo_url = start_echo_upstream(logs)
    embed = "{blue: {dense: minilm, '': minilm}, green: {dense: small}}"
    routes = (
        f"  docs: {{blue: docs_blue, green: docs_green, green_percent: 0, writes: both, embed: {embed}}}\n"
        f"  gdocs: {{blue: gdocs_blue, green: gdocs_green, green_percent: 100, writes: green, embed: {embed}}}\n"
    )
    proxy = RunningProxy(logs / "proxy", echo_url, routes, LOCAL_EMBEDDERS + "embed_passthrough_models: [acme/splade]\n").start()
    yield proxy
    proxy.stop()
    echo.stop()


def sent_up(response: httpx.Response) -> tuple[str, bytes]:
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    return result["raw_path"], base64.b64decode(result["body_b64"])


def test_only_documents_change_and_everything_else_goes_up_as_sent(echo_proxy):
    payload = {"text": "naïve café ✓", "price": 1.5e-7, "big": 12345678901234567890, "nested": {"model": "m", "text": "t"}}
    body = {"points": [{"id": 1, "payload": payload, "vector": {
        "dense": {"text": "a sentence", "model": "whatever"},
        "bm25": {"text": "keyword search", "model": "qdrant/bm25", "options": {"language": "english"}},
        "splade": {"text": "learned sparse", "model": "acme/splade"},
    }}]}
    for logical, physical, size in (("docs", "docs_blue", 384), ("gdocs", "gdocs_green", 256)):
        response = httpx.post(f"{echo_proxy.url}/collections/{logical}/points/batch", json={"operations": [{"upsert": body}]})
        path, raw = sent_up(response)
        assert path == f"/collections/{physical}/points/batch"
        point = json.loads(raw)["operations"][0]["upsert"]["points"][0]
        assert len(point["vector"]["dense"]) == size
        assert point["vector"]["bm25"] == body["points"][0]["vector"]["bm25"]  # Qdrant embeds BM25 itself
        assert point["vector"]["splade"] == body["points"][0]["vector"]["splade"]  # listed in embed_passthrough_models
        assert point["payload"] == payload


def test_groups_a_vector_without_an_embedder_and_a_text_free_body(echo_proxy):
    query = {"query": {"nearest": {"text": "group me", "model": "m"}}, "using": "dense", "group_by": "doc", "limit": 3}
    path, raw = sent_up(httpx.post(f"{echo_proxy.url}/collections/gdocs/points/query/groups", json=query))
    assert path == "/collections/gdocs_green/points/query/groups" and len(json.loads(raw)["query"]["nearest"]) == 256
    # green has no embedder for the unnamed vector: that Document goes up as it came (Qdrant decides)
    write = {"points": [{"id": 1, "vector": {"dense": {"text": "a", "model": "m"}}}, {"id": 2, "vector": {"text": "b", "model": "m"}}]}
    points = json.loads(sent_up(httpx.put(f"{echo_proxy.url}/collections/gdocs/points", json=write))[1])["points"]
    assert len(points[0]["vector"]["dense"]) == 256 and points[1]["vector"] == {"text": "b", "model": "m"}
    # A gzip-compressed body is read decoded; it goes up decoded, without the coding header.
    packed = gzip.compress(json.dumps({"query": {"text": "packed", "model": "m"}, "using": "dense"}).encode())
    response = httpx.post(f"{echo_proxy.url}/collections/gdocs/points/query", content=packed,
                          headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert len(json.loads(sent_up(response)[1])["query"]) == 256
    assert "content-encoding" not in {name.lower() for name, _ in response.json()["result"]["headers"]}
    untouched = b'{"query": [0.5, 0.25],   "limit": 2, "filter": {"must": [{"key": "text", "match": {"text": "x"}}]}}'
    response = httpx.post(f"{echo_proxy.url}/collections/docs/points/query", content=untouched, headers={"content-type": "application/json"})
    assert sent_up(response)[1] == untouched  # no Document: the bytes as sent


# ---------------------------------------------------------------- type: openai


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    port = free_port()
    server = ServerProcess(
        [sys.executable, "-m", "tests.openai_embeddings", "--port", str(port), "--dimensions", "32"],
        f"http://127.0.0.1:{port}/", tmp_path_factory.mktemp("openai") / "service.log",
    ).start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def service_mode(url: str, **mode) -> None:
    httpx.post(f"{url}/control", json={"mode": "ok", **mode}).raise_for_status()


def service_requests(url: str) -> list[dict]:
    return httpx.get(f"{url}/requests").json()


@pytest.fixture(scope="module")
def openai_proxy(service, embedded_upstream, tmp_path_factory):
    """Blue on WordLlama (256), green on the OpenAI-compatible service (32 dims): `svc_*` allows the
    colour override, `guarded_*` has a fast guard."""
    tag = uuid.uuid4().hex[:8]
    logical, guarded = f"svc_{tag}", f"guarded_{tag}"
    direct = qdrant_client(embedded_upstream, timeout=30)
    for name in (logical, guarded):
        direct.create_collection(f"{name}_blue", vectors_config=models.VectorParams(size=256, distance=models.Distance.COSINE))
        direct.create_collection(f"{name}_green", vectors_config=models.VectorParams(size=32, distance=models.Distance.COSINE))
    embedders = (
        "embedders:\n"
        "  small: {type: local, model: wordllama-256}\n"
        "  svc:\n"
        f"    type: openai\n    url: {service}/v1\n    model: acme/embed-32\n    api_key: ${{TEST_EMBEDDINGS_KEY:-sk-test}}\n"
        "    dimensions: 32\n    query_prefix: 'query: '\n    document_prefix: 'passage: '\n"
        "    extra: {task: retrieval}\n    timeout: 3s\n    batch_size: 4\n"
        f"  down: {{type: openai, url: 'http://user:secret@127.0.0.1:{free_port()}/v1', model: m, dimensions: 32}}\n"
    )
    routes = (
        f"  {logical}: {{blue: {logical}_blue, green: {logical}_green, green_percent: 50, writes: both, allow_override: true,"
        " embed: {blue: small, green: svc}}\n"
        f"  {guarded}: {{blue: {guarded}_blue, green: {guarded}_green, green_percent: 50, writes: both,"
        f" embed: {{blue: small, green: svc}}, guard: {FAST_GUARD}}}\n"
        f"  {logical}_down: {{blue: {logical}_blue, green: {logical}_green, green_percent: 100, embed: {{blue: small, green: down}}}}\n"
    )
    proxy = RunningProxy(tmp_path_factory.mktemp("openai-proxy"), embedded_upstream, routes, embedders).start()
    yield proxy, logical, guarded, direct
    proxy.stop()
    direct.close()


@pytest.fixture(autouse=True)
def healthy_service(request):
    """Each test starts with the service answering and its request log empty."""
    if "service" in request.fixturenames:
        url = request.getfixturevalue("service")
        service_mode(url)
        httpx.delete(f"{url}/requests")
    yield


def test_openai_embedder_request_shape_batches_prefixes_and_dimensions(openai_proxy, service):
    proxy, logical, _, direct = openai_proxy
    client = text_client(proxy.url)
    client.upsert(logical, [models.PointStruct(id=i, vector=document(t)) for i, t in enumerate(SENTENCES[:10])], wait=True)
    # The three batches go out concurrently, so the service may receive them in any order.
    calls = sorted(service_requests(service), key=lambda c: SENTENCES.index(c["body"]["input"][0].removeprefix("passage: ")))
    assert [len(c["body"]["input"]) for c in calls] == [4, 4, 2]  # batch_size 4, in the order the texts were given
    first = calls[0]
    assert first["headers"]["Authorization"] == "Bearer sk-test"
    assert {k: v for k, v in first["body"].items() if k != "input"} == {"model": "acme/embed-32", "encoding_format": "float", "task": "retrieval"}
    assert first["body"]["input"][0] == "passage: " + SENTENCES[0]
    stored = direct.retrieve(f"{logical}_green", [0], with_vectors=True)[0].vector
    assert stored == pytest.approx(vector_for("passage: " + SENTENCES[0], 32), abs=1e-6)
    assert len(direct.retrieve(f"{logical}_blue", [0], with_vectors=True)[0].vector) == 256
    green = text_client(proxy.url, **{"x-bluegreen-color": "green"})
    httpx.delete(f"{service}/requests")
    green.query_points(logical, query=document("where is Paris"), limit=1)
    assert service_requests(service)[0]["body"]["input"] == ["query: where is Paris"]
    client.close()
    green.close()


FAILURES = [
    ({"mode": "status", "status": 500}, 502, "answered HTTP 500", "status"),
    ({"mode": "status", "status": 401, "quote_key": True}, 502, "key refused: ***", "status"),
    # 3 s: a healthy answer from the service must not time out on a loaded machine; the slow one never comes in time
    ({"mode": "slow", "delay": 6.0}, 504, "timed out after 3s", "timeout"),
    ({"mode": "wrong_dims"}, 502, "answered a 33-dimensional vector, expected 32", "dimensions"),
    ({"mode": "garbage"}, 502, "answered something other than OpenAI's embeddings shape", "response"),
]


@pytest.mark.slow  # waits out the embedder's 3 s timeout twice
def test_openai_embedder_failures_answer_qdrant_shaped_errors_naming_the_embedder(openai_proxy, service):
    proxy, logical, _, direct = openai_proxy
    client = text_client(proxy.url)
    blue = text_client(proxy.url, **{"x-bluegreen-color": "blue"})
    for mode, status, words, kind in FAILURES:
        service_mode(service, **mode)
        forced = httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": {"text": f"q {kind}", "model": "m"}},
                            headers={"x-bluegreen-color": "green"}, timeout=10)
        assert forced.status_code == status, kind
        error = forced.json()["status"]["error"]
        assert "embedder `svc`" in error and words in error and "sk-test" not in error, error
        # A dual write is not acknowledged when green's model fails; blue answers text on its own model.
        with pytest.raises(UnexpectedResponse) as raised:
            client.upsert(logical, [models.PointStruct(id=77, vector=document(f"not acknowledged {kind}"))], wait=True)
        assert raised.value.status_code == status
        assert blue.query_points(logical, query=document(f"fine on blue {kind}"), limit=1) is not None
        metrics = proxy.metrics_text()
        assert metric_value(metrics, "bluegreen_embed_errors_total", embedder="svc", kind=kind) >= 2
    assert direct.retrieve(f"{logical}_green", [77]) == []
    # Nothing listening: 502 naming the embedder (not its credentials); failover answers from blue.
    down = httpx.post(f"{proxy.url}/collections/{logical}_down/points/query", json={"query": {"text": "x", "model": "m"}}, timeout=10)
    assert down.status_code == 200 and down.headers["x-bluegreen-color"] == "blue"
    assert metric_value(proxy.metrics_text(), "bluegreen_embed_errors_total", embedder="down", kind="connect") == 1
    assert "embedder `down` is unreachable at http://127.0.0.1:" in proxy.server.log()
    assert "secret" not in proxy.server.log() and "sk-test" not in proxy.server.log()
    assert metric_value(proxy.metrics_text(), "bluegreen_requests_total", route=logical, color="green", status="5xx") >= 8
    client.close()
    blue.close()


def test_green_embedder_failing_trips_the_guard_and_failover_reembeds_on_blue(openai_proxy, service):
    proxy, _, guarded, _ = openai_proxy
    text_client(proxy.url).upsert(guarded, [models.PointStruct(id=i, vector=document(t)) for i, t in enumerate(SENTENCES)], wait=True)
    service_mode(service, mode="status", status=503)

    async def drive(offset: int) -> dict[str, int]:
        seen: dict[str, int] = {}
        async with aiohttp.ClientSession() as session:
            for user in range(offset, offset + 40):
                text = SENTENCES[user % len(SENTENCES)]
                async with session.post(f"{proxy.url}/collections/{guarded}/points/query", headers={"x-user-id": f"u{user}"},
                                        json={"query": {"text": text, "model": "m"}, "limit": 1}) as response:
                    answer = await response.json()
                    key = f"{response.status}/{response.headers.get('x-bluegreen-color')}"
                    seen[key] = seen.get(key, 0) + 1
                    assert answer["result"]["points"][0]["id"] == user % len(SENTENCES)  # blue's model found it
        return seen

    seen: dict[str, int] = {}
    offset = 0
    deadline = time.monotonic() + 30
    while proxy.admin_json()["routes"][guarded]["state"] != "rolled_back":
        assert time.monotonic() < deadline, proxy.admin_json()["routes"][guarded]
        for key, count in asyncio.run(drive(offset)).items():
            seen[key] = seen.get(key, 0) + count
        offset += 40
    assert set(seen) == {"200/blue"}, seen  # every green failure was answered by blue, re-embedded with blue's model
    status = proxy.admin_json()["routes"][guarded]
    assert status["reason"] == "error_rate" and status["effective_green_percent"] == 0
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_rollbacks_total", route=guarded, reason="error_rate") == 1
    assert metric_value(metrics, "bluegreen_failovers_total", route=guarded) > 0
    assert metric_value(metrics, "bluegreen_embed_errors_total", embedder="svc", kind="status") > 0


def test_embedders_follow_a_config_reload(openai_proxy, service):
    """A reload that points the green model at another service takes effect without a restart."""
    proxy, logical, _, _ = openai_proxy
    config = proxy.config_path.read_text()
    proxy.config_path.write_text(config.replace("model: acme/embed-32", "model: acme/embed-32-v2"))
    wait_until(lambda: proxy.admin_json()["generation"] == 2, timeout=10)
    httpx.delete(f"{service}/requests")
    response = httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": {"text": "after reload", "model": "m"}},
                          headers={"x-bluegreen-color": "green"}, timeout=10)
    assert response.status_code == 200
    assert service_requests(service)[0]["body"]["model"] == "acme/embed-32-v2"
