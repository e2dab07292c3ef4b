"""Issue 19, other gRPC clients than the project's own qdrant-client 1.20 (tests/test_grpc_face.py): an older
qdrant-client (1.12) and @qdrant/js-client-grpc in Node, each run as an application would run it (a
script in a process of its own, installed from the registry into the test cache by tests.client_installs)
through the proxy's gRPC listener in front of the embedded upstream's gRPC face. Every answer must equal
the same script's answer going direct to the physical collection the proxy named, the collections
seeded afresh before each run (so write acknowledgements and point versions match too)."""
from __future__ import annotations

import json
import subprocess

import grpc
import pytest
from qdrant_client import grpc as qgrpc
from qdrant_client import models

from tests import client_installs
from tests.support import RunningProxy, free_port, qdrant_grpc_client, route_yaml, start_embedded_upstream

pytestmark = pytest.mark.slow

API_KEY = "app-key"
CLIENTS = f"clients:\n  api_keys:\n    - {{key: {API_KEY}, access: rw}}\n"
DOCS = ("docs", "docs_blue", "docs_green")  # split by x-user-id, what the Node client sends
OLD = ("old", "old_blue", "old_green")  # all reads to green: qdrant-client 1.12 sends no metadata but api-key
ROUTES = route_yaml(*DOCS, 50, writes="both") + route_yaml(*OLD, 100, writes="both")
SCRIPT_TIMEOUT = 60


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


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, upstream):
    """(RunningProxy, its gRPC port): one for the module, clients need API_KEY."""
    url, grpc_port = upstream
    port = free_port()
    running = RunningProxy(
        tmp_path_factory.mktemp("proxy"), url, ROUTES, extra_yaml=f"grpc: {{host: 127.0.0.1, port: {port}}}\n" + CLIENTS,
        upstream_options=f"timeout: 10s, grpc_url: '127.0.0.1:{grpc_port}'",
    )
    with running:
        yield running, port


@pytest.fixture(scope="session")
def old_python():
    return client_installs.old_qdrant_client_python()


@pytest.fixture(scope="session")
def node_client():
    return client_installs.node_client()


def seed(direct, route: tuple[str, str, str]) -> None:
    """The route's two physical collections, afresh: blue 4 points on the axes, green 3 a little off them."""
    _, blue, green = route
    for name, offset, count in ((blue, 0.0, 4), (green, 0.3, 3)):
        if direct.collection_exists(name):
            direct.delete_collection(name)
        direct.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
        axes = [[1.0 if axis == i else offset * (i + 1) for axis in range(4)] for i in range(count)]
        direct.upsert(name, [models.PointStruct(id=i + 1, vector=v, payload={"n": i + 1, "colour": name})
                             for i, v in enumerate(axes)], wait=True)


def routed(proxy, collection: str, metadata=()) -> dict[str, str]:
    """The initial metadata the proxy answers a Query on `collection` with (colour, physical collection)."""
    running, port = proxy
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = qgrpc.QueryPoints(collection_name=collection, limit=1)
        _, call = qgrpc.PointsStub(channel).Query.with_call(request, metadata=(("api-key", API_KEY), *metadata), timeout=10)
        return dict(call.initial_metadata())


def run_script(args: list[str], what: str) -> dict:
    done = subprocess.run(args, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert done.returncode == 0, f"{what} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    output = json.loads(done.stdout.strip().splitlines()[-1])
    assert "error" not in output, f"{what}: {output}"
    return output


def test_qdrant_client_1_12_over_grpc_answers_as_it_does_direct(proxy, upstream, direct, old_python):
    script = str(client_installs.CLIENTS / "qdrant_client_old.py")
    logical, blue, green = OLD
    seed(direct, OLD)
    physical = routed(proxy, logical)["x-bluegreen-collection"]
    assert physical == green

    through = run_script([str(old_python), script, json.dumps({"grpc_port": proxy[1], "collection": logical, "api_key": API_KEY})],
                         "qdrant-client 1.12 through the proxy")
    assert through["version"].startswith("1.12.")
    answers = through["answers"]
    assert {p["payload"]["colour"] for p in answers["query_points"]["points"] + answers["search"]} == {green}
    assert answers["upsert"]["status"] == "completed"
    assert answers["count"]["count"] == 4 and answers["count_after_delete"]["count"] == 3
    assert [p["id"] for p in answers["retrieve"]] == [1, 30]
    # `writes: both`: the upsert reached blue as well (then the script's delete removed it from both).
    assert direct.count(blue).count == 4 and not direct.retrieve(blue, [30])

    seed(direct, OLD)
    straight = run_script([str(old_python), script, json.dumps({"grpc_port": upstream[1], "collection": physical, "api_key": API_KEY})],
                          "qdrant-client 1.12 direct")
    assert through == straight


def run_node(node_client, **options) -> dict:
    return run_script(["node", str(node_client / "client.mjs"), json.dumps(options)], f"the Node client with {options}")


def test_the_node_grpc_client_answers_as_it_does_direct(proxy, upstream, direct, node_client):
    logical, blue, green = DOCS
    seed(direct, DOCS)
    users = {}  # colour -> a user the route sends there
    for n in range(100):
        users.setdefault(routed(proxy, logical, (("x-user-id", f"user-{n}"),))["x-bluegreen-color"], f"user-{n}")
        if len(users) == 2:
            break
    for colour, user in users.items():
        physical = blue if colour == "blue" else green
        seed(direct, DOCS)
        through = run_node(node_client, url=f"http://127.0.0.1:{proxy[1]}", collection=logical, apiKey=API_KEY,
                           headers={"x-user-id": user})
        # Every read named the user's colour; the write went to both.
        assert dict(through["routedTo"]) == {
            "query": physical, "search": physical, "upsert": f"{blue},{green}", "scroll": physical, "count": physical,
            "get": physical, "queryBatch": physical,
        }
        answers = through["answers"]
        assert answers["health"]["version"]  # the client's version check and Qdrant's health call, through the proxy
        assert set(through["warnings"]) <= {"Api key is used with unsecure connection."}, through["warnings"]
        assert answers["count"]["result"]["count"] == str(4 if colour == "green" else 5)
        assert direct.retrieve(blue, [20]) and direct.retrieve(green, [20])

        seed(direct, DOCS)
        straight = run_node(node_client, url=f"http://127.0.0.1:{upstream[1]}", collection=physical, apiKey=API_KEY,
                            headers={"x-user-id": user})
        assert through["answers"] == straight["answers"]
        assert {name for name, collection in straight["routedTo"] if collection is not None} == set()

    refused = run_node(node_client, url=f"http://127.0.0.1:{proxy[1]}", collection=logical, anonymous=True)
    assert refused["answers"]["refused"]["code"] == "Unauthenticated", refused
