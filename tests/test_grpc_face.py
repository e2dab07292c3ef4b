"""Issue 19, the gRPC face: the real qdrant-client (prefer_grpc=True) against the proxy's gRPC listener in
front of the embedded upstream's gRPC face, each answer compared with the same client going direct to the
physical collection the proxy named; raw calls (qdrant-client's own stubs) where status codes and
initial metadata matter."""
from __future__ import annotations

import time
import uuid

import grpc
import httpx
import pytest
from qdrant_client import grpc as qgrpc
from qdrant_client import models

from tests.support import (
    ADMIN_TOKEN, RunningProxy, free_port, metric_value, qdrant_client, qdrant_grpc_client, route_yaml, start_embedded_upstream, wait_until,
)

DIM = 4
AXES = {1: [1.0, 0.0, 0.0, 0.0], 2: [0.0, 1.0, 0.0, 0.0], 3: [0.0, 0.0, 1.0, 0.0], 4: [0.0, 0.0, 0.0, 1.0]}
USERS = [f"user-{i}" for i in range(40)]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    """(REST URL, gRPC port) of an embedded upstream serving both."""
    grpc_port = free_port()
    server, url = start_embedded_upstream(tmp_path_factory.mktemp("data"), tmp_path_factory.mktemp("logs"), grpc_port=grpc_port)
    yield url, grpc_port
    server.stop()


@pytest.fixture(scope="module")
def direct(upstream):
    client = qdrant_grpc_client(upstream[0], upstream[1], timeout=30)
    yield client
    client.close()


def fill(client, name: str, offset: float = 0.0, count: int = 4) -> None:
    """`count` points near the axes; `offset` makes one colour's answers differ from the other's."""
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    points = [
        models.PointStruct(id=i, vector=[x + offset * i for x in v], payload={"n": i, "colour": name})
        for i, v in list(AXES.items())[:count]
    ]
    client.upsert(name, points, wait=True)


class Face:
    """A proxy process with a gRPC listener, its routes rewritten in place (hot reload)."""

    def __init__(self, tmp_path, upstream, routes: str, extra_yaml: str = "", grpc_url: str | None = None, admin_options: str = ""):
        url, grpc_port = upstream
        self.grpc_port = free_port()
        target = grpc_url or f"127.0.0.1:{grpc_port}"
        self.proxy = RunningProxy(
            tmp_path / "proxy", url, routes, extra_yaml=f"grpc: {{host: 127.0.0.1, port: {self.grpc_port}}}\n" + extra_yaml,
            upstream_options=f"timeout: 10s, grpc_url: '{target}'", admin_options=admin_options,
        )

    def __enter__(self) -> "Face":
        self.proxy.start()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.points = qgrpc.PointsStub(self.channel)
        self.collections = qgrpc.CollectionsStub(self.channel)
        return self

    def __exit__(self, *exc) -> None:
        self.channel.close()
        self.proxy.stop()

    def client(self, **options):
        return qdrant_grpc_client(self.proxy.url, self.grpc_port, timeout=30, **options)


def initial(call) -> dict[str, str]:
    return dict(call.initial_metadata())


def query(stub, collection: str, user: str | None = None, **options):
    """A raw Query by vector: (response, call) so the initial metadata can be read."""
    request = qgrpc.QueryPoints(
        collection_name=collection, query=qgrpc.Query(nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=[1.0, 0.2, 0.1, 0.0]))),
        limit=3, with_payload=qgrpc.WithPayloadSelector(enable=True),
    )
    metadata = [("x-user-id", user)] if user else []
    return stub.Query.with_call(request, metadata=metadata + list(options.pop("metadata", [])), **options)


def test_unrouted_calls_pass_through_unchanged(tmp_path, upstream, direct):
    name = f"plain_{uuid.uuid4().hex[:8]}"
    with Face(tmp_path, upstream, route_yaml("docs", "docs_b", "docs_g", 0)) as face:
        client = face.client()
        fill(client, name)  # created and written through the proxy
        vector = [1.0, 0.2, 0.1, 0.0]
        assert client.query_points(name, query=vector, limit=3).points == direct.query_points(name, query=vector, limit=3).points
        assert client.count(name).count == 4
        assert client.collection_exists(name) and not client.collection_exists(name + "_missing")
        assert name in {c.name for c in client.get_collections().collections}
        with pytest.raises(Exception) as raised:
            client.query_points(name + "_missing", query=vector)
        assert "Not found" in str(raised.value) or "NOT_FOUND" in str(raised.value)
        client.close()


def test_routed_reads_go_to_the_colour_rest_picks_with_the_same_answers(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue, 0.0, 4)
    fill(direct, green, 0.3, 3)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 50, key="[header:x-user-id]")) as face:
        client = face.client()
        rest = httpx.Client(base_url=face.proxy.url, timeout=10)
        seen = set()
        for user in USERS:
            response, call = query(face.points, "docs", user)
            colour = initial(call)["x-bluegreen-color"]
            physical = initial(call)["x-bluegreen-collection"]
            assert physical == (green if colour == "green" else blue)
            over_rest = rest.post("/collections/docs/points/query", json={"query": [1.0, 0.2, 0.1, 0.0], "limit": 3},
                                  headers={"x-user-id": user})
            assert over_rest.headers["x-bluegreen-color"] == colour  # the same key, the same colour
            expected = direct.query_points(physical, query=[1.0, 0.2, 0.1, 0.0], limit=3, with_payload=True).points
            assert [p.id.num for p in response.result] == [p.id for p in expected]
            assert {p.payload["colour"].string_value for p in response.result} == {physical}
            seen.add(colour)
            with_client = qdrant_grpc_client(face.proxy.url, face.grpc_port, timeout=30, headers={"x-user-id": user})
            assert with_client.query_points("docs", query=[1.0, 0.2, 0.1, 0.0], limit=3).points == \
                direct.query_points(physical, query=[1.0, 0.2, 0.1, 0.0], limit=3).points
            assert with_client.count("docs").count == direct.count(physical).count
            with_client.close()
        assert seen == {"blue", "green"}
        text = face.proxy.metrics_text()
        # Every read above, counted once on the face it came in on (two per user over gRPC, one over REST).
        assert metric_value(text, "bluegreen_requests_total", route="docs", operation="query", protocol="rest") == len(USERS)
        assert metric_value(text, "bluegreen_requests_total", route="docs", operation="query", protocol="grpc") == 2 * len(USERS)
        assert metric_value(text, "bluegreen_request_duration_seconds_count", route="docs", operation="query", protocol="grpc") == 2 * len(USERS)
        rest.close()
        client.close()


def test_batches_lookups_and_refusals(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue, 0.0, 4)
    fill(direct, green, 0.3, 3)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 100)) as face:
        client = face.client()
        vector = [1.0, 0.2, 0.1, 0.0]
        batch = [models.QueryRequest(query=vector, limit=2), models.QueryRequest(query=[0.0, 1.0, 0.0, 0.0], limit=2)]
        assert client.query_batch_points("docs", batch) == direct.query_batch_points(green, batch)
        # A lookup naming the logical collection reads the same colour's physical one.
        recommend = models.RecommendQuery(recommend=models.RecommendInput(positive=[1]))
        through = client.query_points("docs", query=recommend, limit=2, lookup_from=models.LookupLocation(collection="docs"))
        assert through.points and through == direct.query_points(
            green, query=recommend, limit=2, lookup_from=models.LookupLocation(collection=green))
        # A batch whose inner names differ from the outer one.
        search = qgrpc.SearchPoints(collection_name=blue, vector=vector, limit=1)
        with pytest.raises(grpc.RpcError) as raised:
            face.points.SearchBatch(qgrpc.SearchBatchPoints(collection_name="docs", search_points=[search]))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "search_points" in raised.value.details()
        # Changing the logical collection's layout is refused, as over REST.
        with pytest.raises(grpc.RpcError) as raised:
            face.collections.Delete(qgrpc.DeleteCollection(collection_name="docs"))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "logical collection" in raised.value.details()
        assert direct.collection_exists(blue) and direct.collection_exists(green)
        # An alias may only point at a physical collection.
        with pytest.raises(grpc.RpcError) as raised:
            face.collections.UpdateAliases(qgrpc.ChangeAliases(actions=[
                qgrpc.AliasOperations(create_alias=qgrpc.CreateAlias(collection_name="docs", alias_name="latest"))]))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "alias must point" in raised.value.details()
        client.close()


def test_writes_follow_the_routes_policy_and_both_lands_on_both(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue)
    fill(direct, green)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 0, writes="both")) as face:
        point = qgrpc.PointStruct(id=qgrpc.PointId(num=9), vectors=qgrpc.Vectors(vector=qgrpc.Vector(data=[0.5, 0.5, 0.5, 0.5])))
        response, call = face.points.Upsert.with_call(qgrpc.UpsertPoints(collection_name="docs", wait=True, points=[point]))
        assert initial(call) == {"x-bluegreen-color": "both", "x-bluegreen-collection": f"{blue},{green}"}
        assert response.result.status == qgrpc.UpdateStatus.Completed
        assert direct.retrieve(blue, [9]) and direct.retrieve(green, [9])
        # Not acknowledged unless both sides took it: green gone, the write fails with green's status.
        direct.delete_collection(green)
        with pytest.raises(grpc.RpcError) as raised:
            face.points.Upsert(qgrpc.UpsertPoints(collection_name="docs", wait=True, points=[point]))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_hot_reload_moves_grpc_traffic(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue)
    fill(direct, green)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 0)) as face:
        assert initial(query(face.points, "docs", "u1")[1])["x-bluegreen-color"] == "blue"
        face.proxy.write_routes(route_yaml("docs", blue, green, 100))
        wait_until(lambda: initial(query(face.points, "docs", "u1")[1])["x-bluegreen-color"] == "green", timeout=10)
        text = face.proxy.metrics_text()
        assert metric_value(text, "bluegreen_requests_total", route="docs", color="green", operation="query") >= 1


@pytest.mark.slow
def test_many_keys_get_the_same_colour_over_rest_and_grpc(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue)
    fill(direct, green)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 50)) as face, \
            httpx.Client(base_url=face.proxy.url, timeout=10) as rest:
        colours = {}
        for n in range(200):
            user = f"key-{n}"
            over_grpc = initial(query(face.points, "docs", user)[1])["x-bluegreen-color"]
            over_rest = rest.post("/collections/docs/points/query", json={"query": [1.0, 0.2, 0.1, 0.0], "limit": 3},
                                  headers={"x-user-id": user}).headers["x-bluegreen-color"]
            assert over_grpc == over_rest, user
            colours[user] = over_grpc
        # Keys, not chance: the same key again gets the same colour; and the split is near the route's 50%.
        assert all(initial(query(face.points, "docs", user)[1])["x-bluegreen-color"] == colour for user, colour in list(colours.items())[:50])
        assert 70 <= list(colours.values()).count("green") <= 130


@pytest.mark.slow
def test_an_admin_rollback_moves_grpc_traffic_within_a_second(tmp_path, upstream, direct):
    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue)
    fill(direct, green)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 100), admin_options=f"token: {ADMIN_TOKEN}") as face:
        client = face.client(headers={"x-user-id": "u1"})  # its connection, opened before the rollback, stays open
        assert initial(query(face.points, "docs", "u1")[1])["x-bluegreen-color"] == "green"
        assert {p.payload["colour"] for p in client.query_points("docs", query=[1.0, 0.2, 0.1, 0.0], limit=3).points} == {green}
        started = time.monotonic()
        answer = httpx.post(f"{face.proxy.admin_url}/admin/routes/docs/rollback", json={"reason": "bad answers"},
                            headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5)
        assert answer.status_code == 200, answer.text
        wait_until(lambda: initial(query(face.points, "docs", "u1")[1])["x-bluegreen-color"] == "blue", timeout=1.0)
        assert time.monotonic() - started < 1.0
        for _ in range(20):  # and it stays there
            assert initial(query(face.points, "docs", "u1")[1])["x-bluegreen-color"] == "blue"
        assert {p.payload["colour"] for p in client.query_points("docs", query=[1.0, 0.2, 0.1, 0.0], limit=3).points} == {blue}
        client.close()


def test_upstream_unreachable_is_unavailable(tmp_path, upstream):
    with Face(tmp_path, upstream, route_yaml("docs", "b", "g", 0), grpc_url=f"127.0.0.1:{free_port()}") as face:
        with pytest.raises(grpc.RpcError) as raised:
            query(face.points, "docs", "u1", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE


CLIENTS = """\
clients:
  api_keys:
    - {key: reader-key, access: r}
    - {key: writer-key, access: rw}
"""


def test_clients_are_authenticated_before_anything_reaches_the_upstream(tmp_path, upstream, direct):
    name = f"auth_{uuid.uuid4().hex[:8]}"
    with Face(tmp_path, upstream, route_yaml("docs", "docs_b", "docs_g", 0), extra_yaml=CLIENTS) as face:
        create = qgrpc.CreateCollection(
            collection_name=name, vectors_config=qgrpc.VectorsConfig(params=qgrpc.VectorParams(size=DIM, distance=qgrpc.Distance.Cosine)),
        )
        for metadata, code in (
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("api-key", "wrong"),), grpc.StatusCode.UNAUTHENTICATED),
            ((("api-key", "reader-key"),), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                face.collections.Create(create, metadata=metadata)
            assert raised.value.code() == code, raised.value.details()
            assert not direct.collection_exists(name)  # refused at the proxy: the upstream saw nothing
        assert face.collections.Create(create, metadata=(("api-key", "writer-key"),)).result
        assert direct.collection_exists(name)
        reader = face.client(api_key="reader-key")
        assert reader.collection_exists(name)
        reader.close()
        # Qdrant's health check needs no credential.
        assert qgrpc.QdrantStub(face.channel).HealthCheck(qgrpc.HealthCheckRequest()).version


def test_the_state_collection_is_refused(tmp_path, upstream, direct):
    extra = "state: {store: qdrant, collection: bg_state}\n"
    with Face(tmp_path, upstream, route_yaml("docs", "docs_b", "docs_g", 0), extra_yaml=extra) as face:
        for call in (
            lambda: face.points.Count(qgrpc.CountPoints(collection_name="bg_state")),
            lambda: face.collections.Delete(qgrpc.DeleteCollection(collection_name="bg_state")),
            lambda: face.points.Query(qgrpc.QueryPoints(
                collection_name="plain", lookup_from=qgrpc.LookupLocation(collection_name="bg_state"))),
            lambda: face.collections.UpdateAliases(qgrpc.ChangeAliases(actions=[
                qgrpc.AliasOperations(create_alias=qgrpc.CreateAlias(collection_name="bg_state", alias_name="mine"))])),
        ):
            with pytest.raises(grpc.RpcError) as raised:
                call()
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED and "reserved" in raised.value.details()
        assert direct.collection_exists("bg_state")


def test_the_async_client_gets_the_same_answers(tmp_path, upstream, direct):
    import asyncio

    from qdrant_client import AsyncQdrantClient

    blue, green = f"b_{uuid.uuid4().hex[:8]}", f"g_{uuid.uuid4().hex[:8]}"
    fill(direct, blue, 0.0, 4)
    fill(direct, green, 0.3, 3)
    with Face(tmp_path, upstream, route_yaml("docs", blue, green, 100)) as face:
        async def run():
            client = AsyncQdrantClient(url=face.proxy.url, grpc_port=face.grpc_port, prefer_grpc=True,
                                       check_compatibility=False, headers={"x-user-id": "u1"})
            try:
                return await asyncio.gather(client.query_points("docs", query=[1.0, 0.2, 0.1, 0.0], limit=3),
                                            client.count("docs"), client.get_collection("docs"))
            finally:
                await client.close()

        points, count, info = asyncio.run(run())
        assert points == direct.query_points(green, query=[1.0, 0.2, 0.1, 0.0], limit=3)
        assert count.count == 3
        # Collection info is answered by blue (a read about the collection itself, as on REST).
        assert info.points_count == direct.get_collection(blue).points_count == 4
