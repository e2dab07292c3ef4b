"""The embedded upstream's gRPC face: the real qdrant-client with prefer_grpc=True over a socket, each
answer compared with the same call over REST on the same data."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid

import grpc
import httpx
import pytest
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client import grpc as qgrpc
from qdrant_client.conversions.conversion import GrpcToRest

from bluegreen_dev.embedded import QDRANT_VERSION
from tests.support import REPO_ROOT, free_port, qdrant_client, qdrant_grpc_client, start_embedded_upstream

DIM = 4
AXES = {1: [1.0, 0.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0, 0.0], 3: [0.0, 0.0, 1.0, 0.0], 4: [0.0, 0.0, 0.0, 1.0]}


@pytest.fixture(scope="module")
def grpc_upstream(tmp_path_factory):
    """(REST URL, gRPC port) of an embedded upstream serving both."""
    grpc_port = free_port()
    server, url = start_embedded_upstream(tmp_path_factory.mktemp("grpc-data"), tmp_path_factory.mktemp("grpc-logs"),
                                          grpc_port=grpc_port)
    yield url, grpc_port
    server.stop()


@pytest.fixture
def clients(grpc_upstream):
    url, grpc_port = grpc_upstream
    over_grpc, over_rest = qdrant_grpc_client(url, grpc_port, timeout=30), qdrant_client(url, timeout=30)
    yield over_grpc, over_rest
    over_grpc.close()
    over_rest.close()


@pytest.fixture
def name():
    return f"grpc_{uuid.uuid4().hex[:10]}"


def make_collection(client: QdrantClient, name: str) -> None:
    """Points 1-4 on the axes and 5-8 their mirror images, written through `client`."""
    assert client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    points = [
        models.PointStruct(id=i, vector=v, payload={"n": i, "colour": "red" if i % 2 else "blue", "tags": [f"t{i}"]})
        for i, v in AXES.items()
    ] + [models.PointStruct(id=i + 4, vector=[-x for x in v], payload={"n": i + 4, "colour": "green"}) for i, v in AXES.items()]
    result = client.upsert(name, points, wait=True)
    assert result.status == models.UpdateStatus.COMPLETED


def everything(client: QdrantClient, name: str) -> list:
    return client.scroll(name, limit=100, with_vectors=True)[0]


def rest_json(url: str, path: str, body: dict) -> list:
    response = httpx.post(url + path, json=body)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def test_health_check_answers_like_qdrant(clients, grpc_upstream):
    over_grpc, _ = clients
    info = over_grpc.info()
    assert info.title == "qdrant - vector search engine" and info.version == QDRANT_VERSION
    with grpc.insecure_channel(f"127.0.0.1:{grpc_upstream[1]}") as channel:
        reply = channel.unary_unary("/qdrant.Qdrant/HealthCheck", request_serializer=qgrpc.HealthCheckRequest.SerializeToString,
                                    response_deserializer=qgrpc.HealthCheckReply.FromString)(qgrpc.HealthCheckRequest(), timeout=5)
    assert (reply.title, reply.version) == ("qdrant - vector search engine", QDRANT_VERSION)


def test_reads_over_grpc_equal_the_same_reads_over_rest(clients, name):
    over_grpc, over_rest = clients
    make_collection(over_grpc, name)
    red = models.Filter(must=[models.FieldCondition(key="colour", match=models.MatchValue(value="red"))])
    for client in (over_grpc, over_rest):  # both see the other's writes: one store
        assert client.count(name).count == 8
    calls = [
        lambda c: c.query_points(name, query=[1.0, 0.2, 0.0, 0.0], limit=3, with_vectors=True),
        lambda c: c.query_points(name, query=[0.0, 0.0, 1.0, 0.1], query_filter=red, limit=5, with_payload=["n"]),
        lambda c: c.query_points(name, query=3, limit=2),  # by point id
        lambda c: c.query_points(name, prefetch=[models.Prefetch(query=[1.0, 1.0, 0.0, 0.0], limit=4)],
                                 query=models.FusionQuery(fusion=models.Fusion.RRF), limit=3),
        lambda c: c.query_batch_points(name, [models.QueryRequest(query=[0.0, 1.0, 0.0, 0.0], limit=2),
                                              models.QueryRequest(query=[0.0, 0.0, 0.0, -1.0], limit=3, filter=red)]),
        lambda c: c.query_points_groups(name, group_by="colour", query=[1.0, 1.0, 1.0, 0.0], limit=3, group_size=2),
        lambda c: c.scroll(name, limit=3, offset=2, with_vectors=True),
        lambda c: c.scroll(name, scroll_filter=red, limit=10),
        lambda c: c.count(name, count_filter=red),
        lambda c: c.retrieve(name, [2, 7, 99], with_vectors=True),
        lambda c: c.collection_exists(name),
        lambda c: c.collection_exists(name + "_absent"),
    ]
    for call in calls:
        assert call(over_grpc) == call(over_rest)
    assert over_grpc.query_points(name, query=[1.0, 0.2, 0.0, 0.0], limit=3).points[0].id == 1


def test_search_batch_recommend_and_discover_over_grpc_equal_rest(clients, grpc_upstream, name):
    """Methods qdrant-client 1.20 only reaches through its raw stubs: sent as Qdrant's messages, compared with REST."""
    over_grpc, _ = clients
    url = grpc_upstream[0]
    make_collection(over_grpc, name)
    points = over_grpc.grpc_points

    def scored(results) -> list:
        return [GrpcToRest.convert_scored_point(p).model_dump() for p in results]

    def rest_scored(items) -> list:
        return [models.ScoredPoint.model_validate(p).model_dump() for p in items]

    batch = points.SearchBatch(qgrpc.SearchBatchPoints(collection_name=name, search_points=[
        qgrpc.SearchPoints(collection_name=name, vector=[1.0, 0.1, 0.0, 0.0], limit=2,
                           with_payload=qgrpc.WithPayloadSelector(enable=True)),
        qgrpc.SearchPoints(collection_name=name, vector=[0.0, 0.0, -1.0, 0.0], limit=3, offset=1),
    ]), timeout=10)
    expected = rest_json(url, f"/collections/{name}/points/search/batch", {"searches": [
        {"vector": [1.0, 0.1, 0.0, 0.0], "limit": 2, "with_payload": True},
        {"vector": [0.0, 0.0, -1.0, 0.0], "limit": 3, "offset": 1},
    ]})
    assert [scored(b.result) for b in batch.result] == [rest_scored(b) for b in expected]
    assert [p.id.num for p in batch.result[0].result] == [1, 2]

    recommend = points.Recommend(qgrpc.RecommendPoints(
        collection_name=name, positive=[qgrpc.PointId(num=1)], negative_vectors=[qgrpc.Vector(dense=qgrpc.DenseVector(data=[0.0, 1.0, 0.0, 0.0]))],
        limit=3, strategy=qgrpc.RecommendStrategy.BestScore,
    ), timeout=10)
    expected = rest_json(url, f"/collections/{name}/points/recommend",
                         {"positive": [1], "negative": [[0.0, 1.0, 0.0, 0.0]], "limit": 3, "strategy": "best_score"})
    assert scored(recommend.result) == rest_scored(expected) and len(expected) == 3

    def example(point_id: int) -> qgrpc.VectorExample:
        return qgrpc.VectorExample(id=qgrpc.PointId(num=point_id))

    discover = points.Discover(qgrpc.DiscoverPoints(
        collection_name=name, target=qgrpc.TargetVector(single=example(2)),
        context=[qgrpc.ContextExamplePair(positive=example(1), negative=example(3))], limit=3,
    ), timeout=10)
    expected = rest_json(url, f"/collections/{name}/points/discover",
                         {"target": 2, "context": [{"positive": 1, "negative": 3}], "limit": 3})
    assert scored(discover.result) == rest_scored(expected) and len(expected) == 3


def test_writes_over_grpc_leave_what_the_same_writes_over_rest_leave(clients, name):
    over_grpc, over_rest = clients
    twin = name + "_rest"
    make_collection(over_grpc, name)
    make_collection(over_rest, twin)
    writes = [
        lambda c, n: c.set_payload(n, {"extra": {"a": 1}, "flag": True}, points=[1, 2], wait=True),
        lambda c, n: c.set_payload(n, {"deep": 5}, points=models.Filter(must=[models.HasIdCondition(has_id=[3])]), key="extra", wait=True),
        lambda c, n: c.overwrite_payload(n, {"only": "this"}, points=[4], wait=True),
        lambda c, n: c.delete_payload(n, ["tags"], points=[1, 3], wait=True),
        lambda c, n: c.clear_payload(n, points_selector=[2], wait=True),
        lambda c, n: c.update_vectors(n, [models.PointVectors(id=5, vector=[0.5, 0.5, 0.0, 0.0])], wait=True),
        lambda c, n: c.delete(n, points_selector=models.FilterSelector(filter=models.Filter(
            must=[models.FieldCondition(key="n", match=models.MatchValue(value=6))])), wait=True),
        lambda c, n: c.delete(n, points_selector=[7], wait=True),
        lambda c, n: c.create_payload_index(n, "colour", models.PayloadSchemaType.KEYWORD, wait=True),
        lambda c, n: c.batch_update_points(n, [
            models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(id=9, vector=[0.0, 0.0, 1.0, 1.0], payload={"n": 9})])),
            models.DeletePayloadOperation(delete_payload=models.DeletePayload(keys=["n"], points=[9])),
        ], wait=True),
    ]
    for write in writes:
        results = write(over_grpc, name), write(over_rest, twin)
        statuses = [r.status for r in (results[0] if isinstance(results[0], list) else [results[0]])]
        assert statuses and all(s == models.UpdateStatus.COMPLETED for s in statuses)
        assert everything(over_rest, name) == everything(over_rest, twin)
    assert {p.id for p in everything(over_rest, name)} == {1, 2, 3, 4, 5, 8, 9}
    # the keyword index made over gRPC serves a facet, over gRPC and REST alike
    assert over_grpc.facet(name, "colour") == over_rest.facet(twin, "colour")
    assert over_grpc.get_collection(name).payload_schema.keys() == {"colour"}
    assert over_grpc.delete_payload_index(name, "colour", wait=True).status == models.UpdateStatus.COMPLETED
    assert over_rest.get_collection(name).payload_schema == {}


def test_collections_aliases_and_snapshots_over_grpc(clients, name):
    over_grpc, over_rest = clients
    make_collection(over_grpc, name)
    assert over_grpc.get_collection(name).points_count == 8
    grpc_info, rest_info = over_grpc.get_collection(name), over_rest.get_collection(name)
    assert grpc_info.config.params.vectors == rest_info.config.params.vectors
    assert (grpc_info.status, grpc_info.points_count) == (rest_info.status, rest_info.points_count)
    assert models.CollectionDescription(name=name) in over_grpc.get_collections().collections
    assert over_grpc.get_collections() == over_rest.get_collections()

    alias = name + "_live"
    assert over_grpc.update_collection_aliases([models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=name, alias_name=alias))])
    assert [a.alias_name for a in over_grpc.get_collection_aliases(name).aliases] == [alias]
    assert over_grpc.get_aliases() == over_rest.get_aliases()
    assert over_grpc.query_points(alias, query=[0.0, 1.0, 0.0, 0.0], limit=1).points[0].id == 2
    assert over_grpc.update_collection_aliases([models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))])
    assert not over_rest.collection_exists(alias)

    snapshot = over_grpc.create_snapshot(name, wait=True)
    assert snapshot.name and snapshot.size > 0
    assert [s.name for s in over_grpc.list_snapshots(name)] == [snapshot.name] == [s.name for s in over_rest.list_snapshots(name)]
    assert over_grpc.delete_snapshot(name, snapshot.name, wait=True)
    assert over_rest.list_snapshots(name) == []

    assert over_grpc.delete_collection(name) is True
    assert not over_rest.collection_exists(name)
    assert over_grpc.delete_collection(name) is False


def status_of(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code(), error.value.details()


def test_errors_are_qdrants_status_codes_and_messages(clients, name):
    over_grpc, _ = clients
    code, message = status_of(lambda: over_grpc.count(name))
    assert (code, message) == (grpc.StatusCode.NOT_FOUND, f"Not found: Collection `{name}` doesn't exist!")
    assert status_of(lambda: over_grpc.query_points(name, query=[1.0, 0.0, 0.0, 0.0]))[0] == grpc.StatusCode.NOT_FOUND

    make_collection(over_grpc, name)
    code, message = status_of(lambda: over_grpc.create_collection(name, vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT)))
    assert (code, message) == (grpc.StatusCode.ALREADY_EXISTS, f"Wrong input: Collection `{name}` already exists!")
    code, message = status_of(lambda: over_grpc.upsert(name, [models.PointStruct(id=1, vector=[1.0, 2.0])], wait=True))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("Wrong input: "), message

    # a method Qdrant has and this upstream does not: UNIMPLEMENTED, saying so
    code, message = status_of(lambda: over_grpc.search_matrix_pairs(name, sample=4, limit=2))
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert message == "Not implemented: the gRPC method /qdrant.Points/SearchMatrixPairs is not supported by the embedded upstream (qdrant-edge)"
    code, message = status_of(lambda: over_grpc.update_collection(name, optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1)))
    assert code == grpc.StatusCode.UNIMPLEMENTED and "/qdrant.Collections/Update " in message
    # the REST core's own 501 (here: text to embed, which this upstream cannot) keeps its message
    text = qgrpc.Query(nearest=qgrpc.VectorInput(document=qgrpc.Document(text="hello", model="m")))
    code, message = status_of(lambda: over_grpc.grpc_points.Query(qgrpc.QueryPoints(collection_name=name, query=text), timeout=10))
    assert code == grpc.StatusCode.UNIMPLEMENTED and message.startswith("Not implemented: inference"), message
    assert over_grpc.count(name).count == 8  # still serving after every error


def test_async_client_over_grpc_equals_rest(grpc_upstream, name):
    url, grpc_port = grpc_upstream

    async def exercise() -> tuple:
        client = AsyncQdrantClient(url=url, grpc_port=grpc_port, prefer_grpc=True, check_compatibility=False, timeout=30)
        try:
            await client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
            await client.upsert(name, [models.PointStruct(id=i, vector=v, payload={"n": i}) for i, v in AXES.items()], wait=True)
            found, counted = await asyncio.gather(
                client.query_points(name, query=[0.1, 0.9, 0.0, 0.0], limit=2),
                client.count(name),
            )
            return found, counted, await client.retrieve(name, [4])
        finally:
            await client.close()

    found, counted, retrieved = asyncio.run(exercise())
    rest = qdrant_client(url)
    try:
        assert found == rest.query_points(name, query=[0.1, 0.9, 0.0, 0.0], limit=2)
        assert [p.id for p in found.points] == [2, 1]
        assert counted == rest.count(name) and counted.count == 4
        assert retrieved == rest.retrieve(name, [4])
    finally:
        rest.close()


def test_unknown_method_path_is_unimplemented(grpc_upstream):
    with grpc.insecure_channel(f"127.0.0.1:{grpc_upstream[1]}") as channel:
        call = channel.unary_unary("/qdrant.Points/NoSuchMethod")
        code, _ = status_of(lambda: call(b"", timeout=5))
    assert code == grpc.StatusCode.UNIMPLEMENTED


def test_cli_upstream_passes_grpc_port_and_a_taken_one_fails_startup_clearly(tmp_path):
    """`bluegreen-proxy upstream --grpc-port N` reaches the gRPC listener: with N taken, startup fails naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "upstream", "--data", str(tmp_path / "data"), "--port", str(free_port()),
             "--grpc-port", str(taken_port)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )
    assert result.returncode != 0
    assert f"gRPC listener: Failed to bind to address 127.0.0.1:{taken_port}" in result.stdout + result.stderr, result.stderr


def test_every_qdrant_method_is_served_or_unimplemented(grpc_upstream, name):
    """All 51 methods over a raw channel: each routed one answers (named and sparse vectors, groups with a
    lookup, batches, index params), each other one is UNIMPLEMENTED naming the method."""
    from bluegreen_dev.embedded.grpc_api import ROUTES
    from proxy.grpc_schema import METHODS

    url, grpc_port = grpc_upstream
    c, pid = name, lambda n: qgrpc.PointId(num=n)
    dense = lambda *xs: qgrpc.Vector(dense=qgrpc.DenseVector(data=list(xs)))  # noqa: E731
    everything_ = qgrpc.WithPayloadSelector(enable=True)
    near = qgrpc.Query(nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=[1.0, 1.0, 1.0])))
    points = [qgrpc.PointStruct(id=pid(i), payload={"g": qgrpc.Value(integer_value=i % 2)}, vectors=qgrpc.Vectors(vectors=qgrpc.NamedVectors(vectors={
        "dense": dense(1.0, float(i), 0.5),
        "sp": qgrpc.Vector(sparse=qgrpc.SparseVector(indices=[i, 7], values=[1.0, 0.5])),
    }))) for i in range(1, 7)]
    only = lambda *ids: qgrpc.PointsSelector(points=qgrpc.PointsIdsList(ids=[pid(i) for i in ids]))  # noqa: E731
    example = lambda i: qgrpc.VectorExample(id=pid(i))  # noqa: E731
    calls = [  # in order: the writes build the data the reads need
        ("/qdrant.Collections/Create", qgrpc.CreateCollection(
            collection_name=c, vectors_config=qgrpc.VectorsConfig(params_map=qgrpc.VectorParamsMap(map={
                "dense": qgrpc.VectorParams(size=3, distance=qgrpc.Distance.Cosine)})),
            sparse_vectors_config=qgrpc.SparseVectorConfig(map={"sp": qgrpc.SparseVectorParams()}))),
        ("/qdrant.Points/Upsert", qgrpc.UpsertPoints(collection_name=c, wait=True, points=points)),
        ("/qdrant.Points/UpdateVectors", qgrpc.UpdatePointVectors(collection_name=c, wait=True, points=[
            qgrpc.PointVectors(id=pid(6), vectors=qgrpc.Vectors(vectors=qgrpc.NamedVectors(vectors={"dense": dense(0.0, 1.0, 0.0)})))])),
        ("/qdrant.Points/DeleteVectors", qgrpc.DeletePointVectors(collection_name=c, wait=True, points_selector=only(6),
                                                                    vectors=qgrpc.VectorsSelector(names=["sp"]))),
        ("/qdrant.Points/SetPayload", qgrpc.SetPayloadPoints(collection_name=c, wait=True, points_selector=only(1),
                                                             payload={"x": qgrpc.Value(string_value="y")})),
        ("/qdrant.Points/OverwritePayload", qgrpc.SetPayloadPoints(collection_name=c, wait=True, points_selector=only(2),
                                                                   payload={"g": qgrpc.Value(integer_value=0)})),
        ("/qdrant.Points/DeletePayload", qgrpc.DeletePayloadPoints(collection_name=c, wait=True, keys=["x"], points_selector=only(1))),
        ("/qdrant.Points/ClearPayload", qgrpc.ClearPayloadPoints(collection_name=c, wait=True, points=only(5))),
        ("/qdrant.Points/CreateFieldIndex", qgrpc.CreateFieldIndexCollection(
            collection_name=c, wait=True, field_name="g", field_type=qgrpc.FieldType.FieldTypeInteger,
            field_index_params=qgrpc.PayloadIndexParams(integer_index_params=qgrpc.IntegerIndexParams(lookup=True, range=True, is_principal=False)))),
        ("/qdrant.Points/UpdateBatch", qgrpc.UpdateBatchPoints(collection_name=c, wait=True, operations=[qgrpc.PointsUpdateOperation(
            clear_payload=qgrpc.PointsUpdateOperation.ClearPayload(points=only(4)))])),
        ("/qdrant.Points/Get", qgrpc.GetPoints(collection_name=c, ids=[pid(6)], with_vectors=qgrpc.WithVectorsSelector(enable=True))),
        ("/qdrant.Points/Search", qgrpc.SearchPoints(collection_name=c, vector=[1.0, 2.0, 0.5], vector_name="dense", limit=2)),
        ("/qdrant.Points/SearchBatch", qgrpc.SearchBatchPoints(collection_name=c, search_points=[
            qgrpc.SearchPoints(collection_name=c, vector=[1.0, 0.5], vector_name="sp", sparse_indices=qgrpc.SparseIndices(data=[3, 7]), limit=2)])),
        ("/qdrant.Points/SearchGroups", qgrpc.SearchPointGroups(collection_name=c, vector=[1.0, 2.0, 0.5], vector_name="dense", group_by="g",
                                                                limit=2, group_size=2, with_lookup=qgrpc.WithLookup(collection=c, with_payload=everything_))),
        ("/qdrant.Points/Scroll", qgrpc.ScrollPoints(collection_name=c, limit=2, order_by=qgrpc.OrderBy(key="g"))),
        ("/qdrant.Points/Recommend", qgrpc.RecommendPoints(collection_name=c, positive=[pid(1)], using="dense", limit=2)),
        ("/qdrant.Points/RecommendBatch", qgrpc.RecommendBatchPoints(collection_name=c, recommend_points=[
            qgrpc.RecommendPoints(collection_name=c, positive_vectors=[dense(1.0, 0.0, 0.0)], using="dense", limit=2)])),
        ("/qdrant.Points/RecommendGroups", qgrpc.RecommendPointGroups(collection_name=c, positive=[pid(1)], using="dense", group_by="g", limit=2, group_size=1)),
        ("/qdrant.Points/Discover", qgrpc.DiscoverPoints(collection_name=c, target=qgrpc.TargetVector(single=example(2)), using="dense",
                                                         context=[qgrpc.ContextExamplePair(positive=example(1), negative=example(3))], limit=2)),
        ("/qdrant.Points/DiscoverBatch", qgrpc.DiscoverBatchPoints(collection_name=c, discover_points=[qgrpc.DiscoverPoints(
            collection_name=c, target=qgrpc.TargetVector(single=qgrpc.VectorExample(vector=dense(1.0, 1.0, 1.0))), using="dense", limit=2)])),
        ("/qdrant.Points/Count", qgrpc.CountPoints(collection_name=c, exact=True)),
        ("/qdrant.Points/Query", qgrpc.QueryPoints(collection_name=c, query=near, using="dense", limit=2)),
        ("/qdrant.Points/QueryBatch", qgrpc.QueryBatchPoints(collection_name=c, query_points=[qgrpc.QueryPoints(collection_name=c, query=near, using="dense")])),
        ("/qdrant.Points/QueryGroups", qgrpc.QueryPointGroups(collection_name=c, query=near, using="dense", group_by="g", limit=2, group_size=1)),
        ("/qdrant.Points/Facet", qgrpc.FacetCounts(collection_name=c, key="g", exact=True)),
        ("/qdrant.Collections/Get", qgrpc.GetCollectionInfoRequest(collection_name=c)),
        ("/qdrant.Collections/List", qgrpc.ListCollectionsRequest()),
        ("/qdrant.Collections/UpdateAliases", qgrpc.ChangeAliases(actions=[qgrpc.AliasOperations(
            create_alias=qgrpc.CreateAlias(collection_name=c, alias_name=c + "_a"))])),
        ("/qdrant.Collections/ListCollectionAliases", qgrpc.ListCollectionAliasesRequest(collection_name=c)),
        ("/qdrant.Collections/ListAliases", qgrpc.ListAliasesRequest()),
        ("/qdrant.Collections/CollectionExists", qgrpc.CollectionExistsRequest(collection_name=c)),
        ("/qdrant.Snapshots/Create", qgrpc.CreateSnapshotRequest(collection_name=c)),
        ("/qdrant.Snapshots/List", qgrpc.ListSnapshotsRequest(collection_name=c)),
        ("/qdrant.Qdrant/HealthCheck", qgrpc.HealthCheckRequest()),
        ("/qdrant.Points/Delete", qgrpc.DeletePoints(collection_name=c, wait=True, points=only(3))),
        ("/qdrant.Points/DeleteFieldIndex", qgrpc.DeleteFieldIndexCollection(collection_name=c, wait=True, field_name="g")),
    ]
    replies = {}
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        def call(path: str, request):
            method = getattr(qgrpc, METHODS[path].response.DESCRIPTOR.name)
            return channel.unary_unary(path, request_serializer=type(request).SerializeToString,
                                       response_deserializer=method.FromString)(request, timeout=10)

        for path, request in calls:
            replies[path] = call(path, request)
        snapshot = replies["/qdrant.Snapshots/Create"].snapshot_description.name
        replies["/qdrant.Snapshots/Delete"] = call("/qdrant.Snapshots/Delete", qgrpc.DeleteSnapshotRequest(collection_name=c, snapshot_name=snapshot))
        replies["/qdrant.Collections/Delete"] = call("/qdrant.Collections/Delete", qgrpc.DeleteCollection(collection_name=c))
        assert set(replies) == set(ROUTES)
        for path in set(METHODS) - set(ROUTES):
            request = getattr(qgrpc, METHODS[path].request.DESCRIPTOR.name)()
            code, message = status_of(lambda: call(path, request))
            assert code == grpc.StatusCode.UNIMPLEMENTED, path
            assert message == f"Not implemented: the gRPC method {path} is not supported by the embedded upstream (qdrant-edge)"
    assert len(set(METHODS) - set(ROUTES)) == 13

    # the answers are the data's: spot checks against REST's view, taken before the deletes
    assert [p.id.num for p in replies["/qdrant.Points/Search"].result] == [2, 3]
    sparse = replies["/qdrant.Points/SearchBatch"].result[0].result  # point 3 shares index 3 (1.0) and 7 (0.25), the rest 7 only
    assert (sparse[0].id.num, sparse[0].score, sparse[1].score) == (3, 1.25, 0.25)
    groups = replies["/qdrant.Points/SearchGroups"].result.groups
    assert {g.id.unsigned_value: g.lookup.id.num for g in groups if g.HasField("lookup")} == {1: 1}  # no point 0 to look up
    index = replies["/qdrant.Collections/Get"].result.payload_schema["g"]
    assert index.params.integer_index_params.lookup and index.params.integer_index_params.range  # the params, not just the type
    six = replies["/qdrant.Points/Get"].result[0]
    assert set(six.vectors.vectors.vectors) == {"dense"}  # the sparse vector was deleted, the dense one updated
    assert replies["/qdrant.Points/Count"].result.count == 6
    assert replies["/qdrant.Collections/CollectionExists"].result.exists
    assert [a.alias_name for a in replies["/qdrant.Collections/ListCollectionAliases"].aliases] == [c + "_a"]
    assert len(replies["/qdrant.Snapshots/List"].snapshot_descriptions) == 1
    assert replies["/qdrant.Collections/Delete"].result is True
    assert httpx.get(f"{url}/collections/{c}/exists").json()["result"] == {"exists": False}
