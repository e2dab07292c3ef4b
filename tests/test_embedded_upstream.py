"""The embedded qdrant-edge upstream, driven by the real qdrant-client (REST) and raw HTTP over a socket."""
from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import json
import signal
import uuid

import httpx
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.common.version_check import is_compatible
from qdrant_client.http.exceptions import UnexpectedResponse

from bluegreen_dev.embedded import create_app
from tests.support import qdrant_client, start_embedded_upstream

DIM = 4
# Four fixed directions make every nearest-neighbour answer predictable.
AXES = {1: [1.0, 0.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0, 0.0], 3: [0.0, 0.0, 1.0, 0.0], 4: [0.0, 0.0, 0.0, 1.0]}


@pytest.fixture
def client(embedded_upstream):
    qdrant = qdrant_client(embedded_upstream, timeout=30)
    yield qdrant
    qdrant.close()


@pytest.fixture
def name():
    return f"emb_{uuid.uuid4().hex[:10]}"


def make_points_collection(client: QdrantClient, name: str) -> None:
    """Points 1-4 on the axes; 5-8 as their mirror images; payloads for filtering."""
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    points = [
        models.PointStruct(id=i, vector=vector, payload={"n": i, "colour": "red" if i % 2 else "blue", "tags": [f"t{i}"]})
        for i, vector in AXES.items()
    ] + [
        models.PointStruct(id=i + 4, vector=[-x for x in vector], payload={"n": i + 4, "colour": "green"})
        for i, vector in AXES.items()
    ]
    client.upsert(name, points, wait=True)


def raw(base_url: str, method: str, path: str, body: bytes | dict | None = None) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict) else body
    return httpx.request(method, base_url + path, content=content, headers={"content-type": "application/json"})


def assert_error(response: httpx.Response, status: int, message_start: str) -> str:
    """Qdrant's error envelope: exactly `status.error` and `time`, no result."""
    assert response.status_code == status, response.text
    document = response.json()
    assert set(document) == {"status", "time"} and isinstance(document["time"], float)
    message = document["status"]["error"]
    assert message.startswith(message_start), message
    assert "Traceback" not in response.text
    return message


def ids(points) -> list:
    return [p.id for p in points]


# ---------------------------------------------------------------- service


def test_version_and_health_documents(embedded_upstream):
    version = httpx.get(embedded_upstream + "/").json()  # bare, like Qdrant: no envelope
    assert version["title"] == "qdrant - vector search engine"
    assert is_compatible(importlib.metadata.version("qdrant-client"), version["version"])
    for path, text in (("/healthz", "healthz check passed"), ("/livez", "livez check passed"), ("/readyz", "all shards are ready")):
        response = httpx.get(embedded_upstream + path)
        assert response.status_code == 200 and response.text == text
        assert response.headers["content-type"].startswith("text/plain")


def test_success_envelope_is_compact(embedded_upstream, client, name):
    make_points_collection(client, name)
    far_away = {"must": [{"key": "colour", "match": {"value": "none"}}]}
    search = raw(embedded_upstream, "POST", f"/collections/{name}/points/search", {"vector": AXES[1], "limit": 3, "filter": far_away})
    assert search.content.startswith(b'{"result":[],"status":"ok","time":')
    query = raw(embedded_upstream, "POST", f"/collections/{name}/points/query", {"query": AXES[1], "filter": far_away})
    assert query.content.startswith(b'{"result":{"points":[]},"status":"ok","time":')


def test_answers_are_gzip_compressed_for_clients_that_accept_it(embedded_upstream):
    """As Qdrant's REST server (actix's Compress middleware) does: the proxy must cope with it."""
    for accept, compressed in (("gzip, deflate, br", True), ("br;q=1, gzip;q=0.5", True), ("gzip;q=0", False),
                               ("identity", False), ("gzip;q=zero", False)):
        response = httpx.get(embedded_upstream + "/collections", headers={"Accept-Encoding": accept})
        assert response.status_code == 200 and response.json()["status"] == "ok"  # httpx decodes it
        assert (response.headers.get("content-encoding") == "gzip") is compressed, accept
    with httpx.stream("GET", embedded_upstream + "/collections", headers={"Accept-Encoding": "gzip"}) as response:
        wire = b"".join(response.iter_raw())
    assert gzip.decompress(wire).startswith(b'{"result":')
    assert httpx.get(embedded_upstream + "/").headers.get("content-encoding") == "gzip"  # httpx sends gzip by default


# ---------------------------------------------------------------- collections


def test_collection_lifecycle_and_info(embedded_upstream, client, name):
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=384, distance=models.Distance.DOT),
        hnsw_config=models.HnswConfigDiff(m=32, ef_construct=200),
        quantization_config=models.ScalarQuantization(
            scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=20000),
        shard_number=3,  # Qdrant-only: accepted, ignored
    )
    info = client.get_collection(name)
    assert info.status == models.CollectionStatus.GREEN and info.points_count == 0
    assert info.config.params.vectors.size == 384 and info.config.params.vectors.distance == models.Distance.DOT
    assert (info.config.hnsw_config.m, info.config.hnsw_config.ef_construct) == (32, 200)
    assert info.config.hnsw_config.full_scan_threshold == 10000  # Qdrant's default fills what was not given
    assert info.config.optimizer_config.indexing_threshold == 20000
    assert info.config.quantization_config.scalar.type == models.ScalarType.INT8
    assert name in {c.name for c in client.get_collections().collections}
    assert client.collection_exists(name)

    assert_error(raw(embedded_upstream, "PUT", f"/collections/{name}", {"vectors": {"size": 3, "distance": "Cosine"}}),
                 409, f"Wrong input: Collection `{name}` already exists!")
    assert client.delete_collection(name) is True
    assert raw(embedded_upstream, "DELETE", f"/collections/{name}").json()["result"] is False
    assert not client.collection_exists(name)
    assert_error(httpx.get(f"{embedded_upstream}/collections/{name}"), 404, f"Not found: Collection `{name}` doesn't exist!")


def test_names_are_percent_decoded_and_checked(embedded_upstream, client, name):
    spaced = f"{name} with spaces"
    client.create_collection(spaced, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.EUCLID))
    assert client.get_collection(spaced).config.params.vectors.distance == models.Distance.EUCLID
    assert client.delete_collection(spaced)
    message = assert_error(raw(embedded_upstream, "PUT", "/collections/a%2Fb", {"vectors": {"size": 3, "distance": "Cosine"}}),
                           422, "Validation error in path parameters")
    assert '"/"' in message


def test_named_vectors(client, name):
    client.create_collection(name, vectors_config={
        "image": models.VectorParams(size=3, distance=models.Distance.COSINE),
        "text": models.VectorParams(size=2, distance=models.Distance.EUCLID, hnsw_config=models.HnswConfigDiff(m=8)),
    })
    client.upsert(name, [
        models.PointStruct(id=1, vector={"image": [1.0, 0.0, 0.0], "text": [0.0, 0.0]}),
        models.PointStruct(id=2, vector={"image": [0.0, 1.0, 0.0], "text": [5.0, 5.0]}),
    ], wait=True)
    params = client.get_collection(name).config.params.vectors
    assert params["image"].size == 3 and params["text"].distance == models.Distance.EUCLID
    assert ids(client.query_points(name, query=[0.1, 0.9, 0.0], using="image").points) == [2, 1]
    assert ids(client.query_points(name, query=[0.1, 0.0], using="text").points) == [1, 2]
    (record,) = client.retrieve(name, [2], with_vectors=["text"])
    assert record.vector == {"text": [5.0, 5.0]}
    client.delete_vectors(name, vectors=["text"], points=[2], wait=True)
    client.delete_vectors(name, vectors=["image"], points=models.Filter(must=[models.HasIdCondition(has_id=[1])]), wait=True)
    assert {r.id: r.vector for r in client.retrieve(name, [1, 2], with_vectors=True)} == {
        1: {"text": [0.0, 0.0]}, 2: {"image": [0.0, 1.0, 0.0]}}


# ---------------------------------------------------------------- points


def test_upsert_forms_retrieve_and_get_point(embedded_upstream, client, name):
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    point_uuid = str(uuid.uuid4())
    result = client.upsert(name, [models.PointStruct(id=point_uuid, vector=AXES[1], payload={"kind": "uuid"})], wait=True)
    assert result.status == models.UpdateStatus.COMPLETED
    batch = {"batch": {"ids": [10, 11], "vectors": [AXES[2], AXES[3]], "payloads": [{"kind": "batch"}, {"kind": "batch"}]}}
    assert raw(embedded_upstream, "PUT", f"/collections/{name}/points?wait=true", batch).json()["result"]["status"] == "completed"
    assert client.count(name).count == 3

    records = client.retrieve(name, [point_uuid, 10, 999], with_vectors=True)
    assert sorted(str(r.id) for r in records) == sorted([point_uuid, "10"])
    assert next(r for r in records if r.id == 10).vector == AXES[2]
    point = raw(embedded_upstream, "GET", f"/collections/{name}/points/11").json()["result"]
    assert point == {"id": 11, "payload": {"kind": "batch"}, "vector": AXES[3]}
    assert_error(raw(embedded_upstream, "GET", f"/collections/{name}/points/12"), 404, "Not found: No point with id 12")

    bad_id = raw(embedded_upstream, "PUT", f"/collections/{name}/points", {"points": [{"id": -1, "vector": AXES[1]}]})
    assert_error(bad_id, 400, "Format error in JSON body: value -1 is not a valid point ID")
    ragged = {"batch": {"ids": [20, 21], "vectors": [AXES[1]]}}
    assert_error(raw(embedded_upstream, "PUT", f"/collections/{name}/points", ragged), 400, "Wrong input:")


def test_query_endpoints(client, name):
    make_points_collection(client, name)
    nearest = client.query_points(name, query=[0.9, 0.1, 0.0, 0.0], limit=2, with_payload=True)
    assert ids(nearest.points) == [1, 2]
    assert nearest.points[0].payload["colour"] == "red" and nearest.points[0].vector is None
    assert nearest.points[0].score == pytest.approx(0.9 / (0.82 ** 0.5), rel=1e-5)

    by_id = client.query_points(name, query=1, limit=3)  # a point's own vector; the point itself is left out
    assert 1 not in ids(by_id.points) and len(by_id.points) == 3
    assert ids(client.query_points(name, query=[1.0, 0, 0, 0], limit=8, score_threshold=0.5).points) == [1]
    assert ids(client.query_points(name, query=[1.0, 0, 0, 0], limit=2, offset=1).points)[0] != 1
    with_vector = client.query_points(name, query=AXES[4], limit=1, with_vectors=True, with_payload=["n"])
    assert with_vector.points[0].vector == AXES[4] and with_vector.points[0].payload == {"n": 4}

    # average_vector: 2 * e1 - (-e3) leans to axis 3 once the examples themselves are left out
    recommended = client.query_points(
        name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[1], negative=[7])), limit=1)
    assert ids(recommended.points) == [3]
    fused = client.query_points(
        name,
        prefetch=[models.Prefetch(query=AXES[1], limit=1), models.Prefetch(query=AXES[3], limit=1)],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=2,
    )
    assert set(ids(fused.points)) == {1, 3}

    batch = client.query_batch_points(name, [
        models.QueryRequest(query=AXES[2], limit=1),
        models.QueryRequest(query=AXES[3], limit=1, filter=models.Filter(must_not=[models.HasIdCondition(has_id=[3])])),
    ])
    assert ids(batch[0].points) == [2]
    assert len(batch[1].points) == 1 and ids(batch[1].points) != [3]


def test_search_endpoints(embedded_upstream, client, name):
    make_points_collection(client, name)
    search = raw(embedded_upstream, "POST", f"/collections/{name}/points/search",
                 {"vector": AXES[3], "limit": 2, "with_payload": True}).json()["result"]
    assert search[0]["id"] == 3 and search[0]["payload"]["colour"] == "red"
    assert set(search[0]) == {"id", "version", "score", "payload"}  # absent vector is left out, like Qdrant
    parsed = [models.ScoredPoint.model_validate(point) for point in search]
    assert parsed[0].score == pytest.approx(1.0, abs=1e-6)

    minus_e4 = [-x for x in AXES[4]]
    batch = raw(embedded_upstream, "POST", f"/collections/{name}/points/search/batch", {"searches": [
        {"vector": AXES[1], "limit": 1},
        {"vector": minus_e4, "limit": 1, "filter": {"must": [{"key": "colour", "match": {"value": "green"}}]}},
    ]}).json()["result"]
    assert [[p["id"] for p in points] for points in batch] == [[1], [8]]


def test_filters(client, name):
    make_points_collection(client, name)

    def matching(**filter_fields) -> list:
        points, _ = client.scroll(name, scroll_filter=models.Filter(**filter_fields), limit=100)
        return sorted(ids(points))

    red = models.FieldCondition(key="colour", match=models.MatchValue(value="red"))
    assert matching(must=[red]) == [1, 3]
    assert matching(must_not=[red]) == [2, 4, 5, 6, 7, 8]
    assert matching(should=[red, models.FieldCondition(key="n", match=models.MatchValue(value=8))]) == [1, 3, 8]
    assert matching(must=[models.FieldCondition(key="colour", match=models.MatchAny(any=["blue", "green"]))]) == [2, 4, 5, 6, 7, 8]
    assert matching(must=[models.FieldCondition(key="colour", match=models.MatchExcept(**{"except": ["green"]}))]) == [1, 2, 3, 4]
    assert matching(must=[models.FieldCondition(key="n", range=models.Range(gte=3, lt=6))]) == [3, 4, 5]
    assert matching(must=[models.HasIdCondition(has_id=[2, 7, 99])]) == [2, 7]
    assert matching(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="tags"))]) == [5, 6, 7, 8]
    assert matching(must=[models.Filter(should=[red]), models.FieldCondition(key="n", range=models.Range(gt=1))]) == [3]
    assert client.count(name, count_filter=models.Filter(must=[red])).count == 2
    assert ids(client.query_points(name, query=AXES[1], query_filter=models.Filter(must_not=[red]), limit=1).points) != [1]

    client.create_payload_index(name, "colour", models.PayloadSchemaType.KEYWORD)
    assert matching(must=[red]) == [1, 3]  # same answer through the index


def test_scroll_pages_and_order_by(client, name):
    make_points_collection(client, name)
    first, next_offset = client.scroll(name, limit=3)
    assert ids(first) == [1, 2, 3] and next_offset == 4
    assert first[0].payload["n"] == 1 and first[0].vector is None  # scroll returns payloads by default
    rest, end = client.scroll(name, limit=10, offset=next_offset)
    assert ids(rest) == [4, 5, 6, 7, 8] and end is None

    client.create_payload_index(name, "n", models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER, range=True, lookup=True))
    ordered, _ = client.scroll(name, limit=3, order_by=models.OrderBy(key="n", direction=models.Direction.DESC))
    assert ids(ordered) == [8, 7, 6] and ordered[0].order_value == 8


def test_writes_delete_and_payload(embedded_upstream, client, name):
    make_points_collection(client, name)
    client.delete(name, points_selector=models.PointIdsList(points=[1, 2]), wait=True)
    client.delete(name, points_selector=models.FilterSelector(
        filter=models.Filter(must=[models.FieldCondition(key="n", range=models.Range(gte=7))])), wait=True)
    assert client.count(name).count == 4
    assert client.get_collection(name).points_count == 4

    client.set_payload(name, payload={"extra": True}, points=[3], wait=True)
    client.set_payload(name, payload={"bulk": 1}, points=models.Filter(must=[models.HasIdCondition(has_id=[4, 5])]), wait=True)
    client.overwrite_payload(name, payload={"only": "this"}, points=[6], wait=True)
    client.delete_payload(name, keys=["tags"], points=[3], wait=True)
    records = {r.id: r.payload for r in client.retrieve(name, [3, 4, 5, 6])}
    assert records[3] == {"n": 3, "colour": "red", "extra": True}
    assert records[4]["bulk"] == 1 and records[5]["bulk"] == 1
    assert records[6] == {"only": "this"}
    client.clear_payload(name, points_selector=[4], wait=True)
    assert client.retrieve(name, [4])[0].payload == {}
    by_id_5 = models.Filter(must=[models.HasIdCondition(has_id=[5])])
    client.delete_payload(name, keys=["bulk"], points=by_id_5, wait=True)
    assert "bulk" not in client.retrieve(name, [5])[0].payload
    client.clear_payload(name, points_selector=models.FilterSelector(filter=by_id_5), wait=True)
    assert client.retrieve(name, [5])[0].payload == {}

    client.update_vectors(name, [models.PointVectors(id=3, vector=AXES[1])], wait=True)
    assert ids(client.query_points(name, query=AXES[1], limit=1).points) == [3]
    acknowledged = raw(embedded_upstream, "POST", f"/collections/{name}/points/delete", {"points": [3]}).json()["result"]
    assert acknowledged["status"] == "acknowledged"  # without ?wait=true, as Qdrant answers


def test_payload_index_in_collection_info(embedded_upstream, client, name):
    make_points_collection(client, name)
    client.create_payload_index(name, "colour", models.PayloadSchemaType.KEYWORD, wait=True)
    client.create_payload_index(name, "n", models.IntegerIndexParams(type=models.IntegerIndexType.INTEGER, range=True, lookup=False))
    schema = client.get_collection(name).payload_schema
    assert schema["colour"].data_type == models.PayloadSchemaType.KEYWORD and schema["colour"].points == 8
    assert schema["n"].data_type == models.PayloadSchemaType.INTEGER
    client.delete_payload_index(name, "colour", wait=True)
    assert "colour" not in client.get_collection(name).payload_schema
    missing_schema = raw(embedded_upstream, "PUT", f"/collections/{name}/index", {"field_name": "x"})
    assert_error(missing_schema, 400, "Wrong input: field_schema is required")


def test_indexing_runs_after_writes_cross_the_threshold(client, name):
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=64, distance=models.Distance.COSINE),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10),  # KB: ~40 vectors of 64 floats
    )
    client.upsert(name, [models.PointStruct(id=i, vector=[((i * 7 + j) % 13) / 13 + 0.01 for j in range(64)])
                         for i in range(300)], wait=True)
    info = client.get_collection(name)
    assert info.points_count == 300 and info.indexed_vectors_count > 0


# ---------------------------------------------------------------- aliases


def test_aliases(embedded_upstream, client, name):
    make_points_collection(client, name)
    alias, renamed = f"{name}_alias", f"{name}_renamed"
    client.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    assert models.AliasDescription(alias_name=alias, collection_name=name) in client.get_aliases().aliases
    assert [a.alias_name for a in client.get_collection_aliases(name).aliases] == [alias]
    # Every collection path resolves the alias.
    assert client.get_collection(alias).points_count == 8
    assert ids(client.query_points(alias, query=AXES[2], limit=1).points) == [2]
    client.upsert(alias, [models.PointStruct(id=9, vector=AXES[1])], wait=True)
    assert client.count(name).count == 9
    assert client.collection_exists(alias)

    # Atomic: a failing action leaves the earlier ones unapplied.
    failing = {"actions": [
        {"rename_alias": {"old_alias_name": alias, "new_alias_name": renamed}},
        {"delete_alias": {"alias_name": f"{name}_missing"}},
    ]}
    assert_error(raw(embedded_upstream, "POST", "/collections/aliases", failing), 404, "Not found: Alias")
    assert [a.alias_name for a in client.get_collection_aliases(name).aliases] == [alias]

    client.update_collection_aliases([models.RenameAliasOperation(
        rename_alias=models.RenameAlias(old_alias_name=alias, new_alias_name=renamed))])
    assert [a.alias_name for a in client.get_collection_aliases(name).aliases] == [renamed]
    assert_error(raw(embedded_upstream, "PUT", f"/collections/{renamed}", {"vectors": {"size": 3, "distance": "Cosine"}}),
                 409, "Wrong input:")
    client.update_collection_aliases([models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=renamed))])
    assert not client.collection_exists(renamed)

    client.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    client.delete_collection(name)  # takes its aliases with it
    assert alias not in {a.alias_name for a in client.get_aliases().aliases}
    missing = {"actions": [{"create_alias": {"collection_name": name, "alias_name": alias}}]}
    assert_error(raw(embedded_upstream, "POST", "/collections/aliases", missing), 404, f"Not found: Collection `{name}`")


# ---------------------------------------------------------------- errors


def test_error_envelopes(embedded_upstream, client, name):
    client.create_collection(name, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE))
    base = f"/collections/{name}/points"
    assert_error(raw(embedded_upstream, "POST", f"{base}/query", {"query": [0.1, 0.2, 0.3]}),
                 400, "Wrong input: Vector dimension error: expected dim: 384, got 3")
    assert_error(raw(embedded_upstream, "PUT", f"{base}?wait=true", {"points": [{"id": 1, "vector": [1.0]}]}),
                 400, "Wrong input: Vector dimension error: expected dim: 384, got 1")
    assert_error(raw(embedded_upstream, "POST", f"{base}/query", b"{not json"), 400, "Format error in JSON body: ")
    assert_error(raw(embedded_upstream, "POST", f"{base}/query", {"limit": "many"}), 422, "Validation error in JSON body: ")
    assert_error(raw(embedded_upstream, "POST", f"{base}/scroll", {"unknown_field": 1}), 422, "Validation error in JSON body: ")
    assert_error(raw(embedded_upstream, "POST", "/collections/no_such_collection/points/count", {}),
                 404, "Not found: Collection `no_such_collection` doesn't exist!")

    for method, path in (("POST", f"{base}/search/matrix/pairs"), ("GET", "/cluster"), ("PATCH", f"/collections/{name}")):
        message = assert_error(raw(embedded_upstream, method, path, {}), 501, "Not implemented:")
        assert "not supported by the embedded upstream" in message
    assert_error(raw(embedded_upstream, "GET", "/no/such/path"), 404, "Not found:")
    formula = raw(embedded_upstream, "POST", f"{base}/query", {"query": {"formula": 1.0}})
    assert "not supported by the embedded upstream" in assert_error(formula, 501, "Not implemented:")

    with pytest.raises(UnexpectedResponse) as caught:  # what qdrant-client users see
        client.query_points(name, query=[0.1, 0.2, 0.3])
    assert caught.value.status_code == 400 and b"Vector dimension error" in caught.value.content


# ---------------------------------------------------------------- persistence, in-process use


@pytest.mark.slow  # an upstream process stopped and started again
def test_data_survives_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    server, url = start_embedded_upstream(data_dir, tmp_path)
    try:
        client = qdrant_client(url)
        client.create_collection(
            "kept", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
            hnsw_config=models.HnswConfigDiff(m=24))
        client.upsert("kept", [models.PointStruct(id=i, vector=v, payload={"n": i}) for i, v in AXES.items()], wait=True)
        client.create_payload_index("kept", "n", models.PayloadSchemaType.INTEGER, wait=True)
        client.update_collection_aliases([models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="kept", alias_name="kept_alias"))])
        client.close()
    finally:
        # Graceful shutdown (the lifespan closes the shards), after which uvicorn re-raises SIGTERM.
        assert server.stop() in (0, -signal.SIGTERM)

    server, url = start_embedded_upstream(data_dir, tmp_path)
    try:
        client = qdrant_client(url)
        info = client.get_collection("kept_alias")
        assert info.points_count == 4 and info.config.hnsw_config.m == 24
        assert info.config.params.vectors.size == DIM
        assert info.payload_schema["n"].data_type == models.PayloadSchemaType.INTEGER
        assert client.retrieve("kept", [3])[0].payload == {"n": 3}
        assert ids(client.query_points("kept", query=AXES[4], limit=1).points) == [4]
        client.close()
    finally:
        server.stop()


@pytest.mark.slow  # a second upstream process refused its data directory
def test_one_server_per_data_directory(tmp_path):
    data_dir = tmp_path / "data"
    server, _ = start_embedded_upstream(data_dir, tmp_path)
    try:
        with pytest.raises(RuntimeError, match="failed to start"):
            start_embedded_upstream(data_dir, tmp_path)
    finally:
        server.stop()
    assert "in use by another embedded upstream" in "".join(p.read_text() for p in tmp_path.glob("upstream-*.log"))


def test_create_app_in_process(tmp_path):
    app = create_app(tmp_path / "inproc")
    try:
        transport = httpx.ASGITransport(app=app)

        async def exercise() -> None:
            async with httpx.AsyncClient(transport=transport, base_url="http://embedded") as http:
                created = await http.put("/collections/c", json={"vectors": {"size": 2, "distance": "Dot"}})
                assert created.json()["result"] is True
                await http.put("/collections/c/points?wait=true", json={"points": [{"id": 1, "vector": [1.0, 2.0]}]})
                counted = await http.post("/collections/c/points/count", json={})
                assert counted.json()["result"] == {"count": 1}

        asyncio.run(exercise())
    finally:
        app.store.close()


# ---------------------------------------------------------------- what the migrate commands and older clients need


def test_payload_index_parameters_in_collection_info(client, name):
    make_points_collection(client, name)
    client.create_payload_index(name, "colour", models.KeywordIndexParams(type="keyword", is_tenant=True), wait=True)
    client.create_payload_index(name, "n", models.PayloadSchemaType.INTEGER, wait=True)
    schema = client.get_collection(name).payload_schema
    assert schema["colour"].data_type == models.PayloadSchemaType.KEYWORD and schema["colour"].points == 8
    assert schema["colour"].params.is_tenant is True
    assert schema["n"].params is None  # a plain type has no parameters, as in Qdrant
    client.delete_payload_index(name, "colour", wait=True)
    assert set(client.get_collection(name).payload_schema) == {"n"}


def test_query_groups_with_lookup(embedded_upstream, client, name):
    make_points_collection(client, name)
    groups = client.query_points_groups(
        name, query=[1.0, 0.5, 0.2, 0.0], group_by="colour", group_size=2, limit=2, with_payload=["n"]).groups
    # Scores 1: .88, 2: .44, 3: .18, 4 and 8: 0, mirrors negative: red (1, 3) and blue (2, 4) lead green.
    assert [g.id for g in groups] == ["red", "blue"]
    assert [ids(g.hits) for g in groups] == [[1, 3], [2, 4]]
    assert groups[0].hits[0].payload == {"n": 1}
    lookup = f"{name}_lookup"
    client.create_collection(lookup, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert(lookup, [models.PointStruct(id=i, vector=AXES[1], payload={"title": f"n={i}"}) for i in (1, 2)], wait=True)
    grouped = client.query_points_groups(name, query=[0.2, 1.0, 0.0, 0.0], group_by="n", group_size=1, limit=2, with_lookup=lookup).groups
    assert [(g.id, g.lookup.payload) for g in grouped] == [(2, {"title": "n=2"}), (1, {"title": "n=1"})]
    searched = raw(embedded_upstream, "POST", f"/collections/{name}/points/search/groups",
                   {"vector": AXES[4], "group_by": "colour", "group_size": 1, "limit": 1}).json()["result"]
    assert searched["groups"] == [{"id": "blue", "hits": [{"id": 4, "version": searched["groups"][0]["hits"][0]["version"], "score": 1.0}]}]


def test_recommend_and_discover_endpoints(embedded_upstream, client, name):
    """The deprecated endpoints answer as the equivalent `points/query` does."""
    make_points_collection(client, name)
    base = f"/collections/{name}/points"
    recommended = raw(embedded_upstream, "POST", f"{base}/recommend", {"positive": [1], "negative": [6], "limit": 3}).json()["result"]
    query = client.query_points(name, query=models.RecommendQuery(recommend=models.RecommendInput(positive=[1], negative=[6])), limit=3)
    assert [p["id"] for p in recommended] == ids(query.points) and recommended[0]["id"] not in (1, 6)
    batch = raw(embedded_upstream, "POST", f"{base}/recommend/batch",
                {"searches": [{"positive": [AXES[2]], "limit": 1}, {"positive": [AXES[3]], "limit": 1, "with_payload": True}]}).json()["result"]
    assert [[p["id"] for p in answer] for answer in batch] == [[2], [3]]
    assert "payload" not in batch[0][0] and batch[1][0]["payload"]["n"] == 3
    discovered = raw(embedded_upstream, "POST", f"{base}/discover",
                     {"target": AXES[1], "context": [{"positive": 2, "negative": 6}], "limit": 2}).json()["result"]
    expected = client.query_points(name, query=models.DiscoverQuery(discover=models.DiscoverInput(
        target=AXES[1], context=[models.ContextPair(positive=2, negative=6)])), limit=2)
    assert [p["id"] for p in discovered] == ids(expected.points)
    batch = raw(embedded_upstream, "POST", f"{base}/discover/batch",
                {"searches": [{"target": AXES[3], "context": [], "limit": 1}]}).json()["result"]
    assert [p["id"] for p in batch[0]] == [3]
    grouped = raw(embedded_upstream, "POST", f"{base}/recommend/groups",
                  {"positive": [AXES[2]], "group_by": "colour", "group_size": 1, "limit": 1}).json()["result"]
    assert grouped["groups"][0]["id"] == "blue" and grouped["groups"][0]["hits"][0]["id"] == 2


def test_points_batch(embedded_upstream, client, name):
    make_points_collection(client, name)
    results = client.batch_update_points(name, [
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=9, vector=AXES[1], payload={"n": 9})])),
        models.DeleteOperation(delete=models.PointIdsList(points=[5, 6])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"seen": True}, points=[9])),
        models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[7], vector=[""])),
    ], wait=True)
    assert [r.status for r in results] == [models.UpdateStatus.COMPLETED] * 4
    assert len({r.operation_id for r in results}) == 4
    assert client.count(name).count == 7
    assert client.retrieve(name, [9])[0].payload == {"n": 9, "seen": True}
    # A malformed operation refuses the whole batch before any is applied.
    bad = raw(embedded_upstream, "POST", f"/collections/{name}/points/batch?wait=true", {"operations": [
        {"delete": {"points": [1]}}, {"upsert": {"points": [{"id": "not-an-id", "vector": AXES[1]}]}}]})
    assert_error(bad, 400, "Format error in JSON body")
    assert client.count(name).count == 7


def test_snapshots_create_list_download_recover_delete(embedded_upstream, client, name, tmp_path):
    make_points_collection(client, name)
    client.create_payload_index(name, "colour", models.PayloadSchemaType.KEYWORD, wait=True)
    snapshot = client.create_snapshot(name, wait=True)
    assert snapshot.name.startswith(f"{name}-0-") and snapshot.name.endswith(".snapshot") and snapshot.size > 0
    assert [s.name for s in client.list_snapshots(name)] == [snapshot.name]
    downloaded = httpx.get(f"{embedded_upstream}/collections/{name}/snapshots/{snapshot.name}")
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "application/octet-stream"
    assert len(downloaded.content) == snapshot.size
    import hashlib
    import tarfile
    assert hashlib.sha256(downloaded.content).hexdigest() == snapshot.checksum
    archive = tmp_path / snapshot.name
    archive.write_bytes(downloaded.content)
    with tarfile.open(archive) as tar:  # the documented format: a gzipped tar of the collection's directory
        assert {"collection.json", "shard"} <= set(tar.getnames())

    restored = f"{name}_restored"
    assert client.recover_snapshot(restored, f"file://{archive}", wait=True)
    info = client.get_collection(restored)
    assert info.points_count == 8 and info.payload_schema["colour"].points == 8
    assert client.retrieve(restored, [3])[0].payload == {"n": 3, "colour": "red", "tags": ["t3"]}
    assert ids(client.query_points(restored, query=AXES[2], limit=1).points) == [2]
    # Recovery over an existing collection replaces it.
    client.upsert(name, [models.PointStruct(id=99, vector=AXES[1])], wait=True)
    assert client.recover_snapshot(name, f"file://{archive}", wait=True)
    assert client.count(name).count == 8

    assert client.delete_snapshot(name, snapshot.name, wait=True)
    assert client.list_snapshots(name) == []
    assert_error(raw(embedded_upstream, "GET", f"/collections/{name}/snapshots/{snapshot.name}"), 404, "Not found: Snapshot")
    assert_error(raw(embedded_upstream, "GET", f"/collections/{name}/snapshots/..%2F..%2Faliases.json"), 404, "Not found: Snapshot")


def test_head_and_cors_preflight(embedded_upstream, client, name):
    make_points_collection(client, name)
    got, head = httpx.get(f"{embedded_upstream}/collections/{name}"), httpx.head(f"{embedded_upstream}/collections/{name}")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert httpx.head(f"{embedded_upstream}/collections/no_such").status_code == 404
    assert got.status_code == 200

    preflight = httpx.options(f"{embedded_upstream}/collections/{name}/points/query", headers={
        "origin": "https://app.example", "access-control-request-method": "POST",
        "access-control-request-headers": "api-key, x-user-id"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"] == "api-key, x-user-id"
    simple = httpx.post(f"{embedded_upstream}/collections/{name}/points/count", json={}, headers={"origin": "https://app.example"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example"
    assert httpx.options(f"{embedded_upstream}/collections/{name}").status_code == 400  # not a preflight
