"""Raw vectors pinned by the sizes preflight read, on a route without `embed`: the pure decision, the
controller publishing the sizes into the snapshot, and a proxy process in front of the embedded
upstream (blue 4-dim, green 6-dim) sending each length to the one colour that takes it."""
from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from qdrant_client import models

from proxy.dataplane.live import LiveConfig
from proxy.metrics import Metrics
from proxy.control.rollout_controller import RolloutController
from proxy.control.rollout_store import FileStateStore, StateFile
from routing.config import Preflight, parse_config
from routing.preflight import VectorSizes, evaluate_preflight
from tests.support import RunningProxy, metric_value, qdrant_client, wait_until


def info(vectors: dict) -> dict:
    """The `result` of GET /collections/{name}, trimmed to what preflight reads."""
    return {"status": "green", "config": {"params": {"vectors": vectors}}}


def sizes_of(blue_vectors: dict | None, green_vectors: dict | None) -> VectorSizes | None:
    blue = info(blue_vectors) if blue_vectors is not None else None
    green = info(green_vectors) if green_vectors is not None else None
    return evaluate_preflight(Preflight(), blue, green, 10, 10).vector_sizes


def query(vector: list[float], **fields) -> bytes:
    return json.dumps({"query": vector, "limit": 1, **fields}).encode()


# ---------------------------------------------------------------- the pure decision

def test_unnamed_sizes_pin_a_raw_vector_to_the_colour_it_fits():
    sizes = sizes_of({"size": 4, "distance": "Cosine"}, {"size": 6, "distance": "Cosine"})
    assert sizes == VectorSizes({"": 4}, {"": 6}) and sizes.differ
    assert sizes.pin("query", query([0.1] * 4)) == "blue"
    assert sizes.pin("query", query([0.1] * 6)) == "green"
    assert sizes.pin("query", query([0.1] * 5)) == "blue"  # fits neither: blue answers Qdrant's dimension error
    assert sizes.pin("search", json.dumps({"vector": [0.1] * 6, "limit": 1}).encode()) == "green"
    assert sizes.pin("upsert", json.dumps({"points": [{"id": 1, "vector": [0.1] * 6}]}).encode()) == "green"
    assert sizes.pin("query", json.dumps({"query": 7, "limit": 1}).encode()) is None  # a point id: no raw vector
    assert sizes.pin("scroll", b'{"limit": 1}') is None
    assert sizes.pin("query", b"not json") is None  # the upstream answers it with its own error


def test_named_sizes_are_compared_per_vector_name():
    sizes = sizes_of(
        {"dense": {"size": 4, "distance": "Cosine"}, "title": {"size": 3, "distance": "Dot"}},
        {"dense": {"size": 6, "distance": "Cosine"}, "title": {"size": 3, "distance": "Dot"}},
    )
    assert sizes.differ
    assert sizes.pin("query", query([0.1] * 6, using="dense")) == "green"
    assert sizes.pin("query", query([0.1] * 4, using="dense")) == "blue"
    assert sizes.pin("query", query([0.1] * 3, using="title")) is None  # both take it: the split decides
    assert sizes.pin("upsert", json.dumps({"points": [{"id": 1, "vector": {"dense": [0.1] * 6, "title": [0.1] * 3}}]}).encode()) == "green"


def test_nothing_to_pin_when_sizes_are_equal_or_unknown():
    assert not sizes_of({"size": 4}, {"size": 4}).differ
    assert not sizes_of({"dense": {"size": 4}}, {"other": {"size": 6}}).differ  # no name in common
    assert sizes_of({"size": 4}, None) is None  # green's info not read: no sizes at all
    assert evaluate_preflight(Preflight(), None, None, None, None).vector_sizes is None


def test_the_controller_publishes_sizes_only_once_preflight_has_read_them(tmp_path):
    collections = {"/collections/a": {"size": 4, "distance": "Cosine"}, "/collections/b": {"size": 6, "distance": "Cosine"},
                   "/collections/c": {"size": 4, "distance": "Cosine"}, "/collections/d": {"size": 4, "distance": "Cosine"}}

    async def fetch(method: str, path: str, body: bytes):
        if path.endswith("/points/count"):
            return 200, {"result": {"count": 10}}
        return 200, {"result": info(collections[path])}

    async def scenario() -> None:
        config = parse_config(
            "routes:\n  docs: {blue: a, green: b, green_percent: 50, preflight: {recheck: 1s}}\n"
            "  same: {blue: c, green: d, green_percent: 50, preflight: {recheck: 1s}}\n", environ={})
        live = LiveConfig.initial(config, "hash-1", str(tmp_path / "bluegreen.yaml"))
        safety = RolloutController(live, Metrics(), fetch, FileStateStore(StateFile(tmp_path / "state.json")), {})
        assert live.snapshot.vector_sizes == {}  # before preflight: nothing is pinned
        safety.step()  # starts both routes' checks
        for _ in range(50):
            await asyncio.sleep(0.01)
            if live.snapshot.vector_sizes:
                break
        assert live.snapshot.vector_sizes == {"docs": VectorSizes({"": 4}, {"": 6})}  # `same`: equal sizes, not published
        await safety.flush()

    asyncio.run(scenario())


# ---------------------------------------------------------------- a proxy in front of the embedded upstream

@pytest.fixture(scope="module")
def sized(embedded_upstream, tmp_path_factory):
    logical = f"sized_{uuid.uuid4().hex[:8]}"
    direct = qdrant_client(embedded_upstream, timeout=30)
    for colour, size in (("blue", 4), ("green", 6)):
        direct.create_collection(f"{logical}_{colour}", vectors_config=models.VectorParams(size=size, distance=models.Distance.COSINE))
        direct.upsert(f"{logical}_{colour}", [
            models.PointStruct(id=i, vector=[float(i == j) + 0.01 for j in range(size)]) for i in range(1, 4)
        ], wait=True)
    routes = (
        f"  {logical}:\n    blue: {logical}_blue\n    green: {logical}_green\n    green_percent: 50\n    writes: both\n"
        "    preflight: {max_count_drift: 1, recheck: 1s}\n"
    )
    proxy = RunningProxy(tmp_path_factory.mktemp("pin-proxy"), embedded_upstream, routes).start()
    yield proxy, logical, direct
    proxy.stop()
    direct.close()


def post_query(proxy: RunningProxy, logical: str, vector: list[float], user: str) -> httpx.Response:
    return httpx.post(f"{proxy.url}/collections/{logical}/points/query", json={"query": vector, "limit": 1},
                      headers={"x-user-id": user}, timeout=30)


def test_raw_vectors_are_pinned_by_the_sizes_preflight_read(sized):
    proxy, logical, direct = sized
    wait_until(lambda: (proxy.admin_json()["routes"][logical]["preflight"] or {}).get("ok") is True, timeout=20)
    before = proxy.metrics_text()
    for user in range(20):  # at 50 % about half of these keys are green's by the split: the length decides
        blue = post_query(proxy, logical, [0.0, 1.0, 0.0, 0.0], f"user-{user}")
        assert (blue.status_code, blue.headers["x-bluegreen-color"], blue.json()["result"]["points"][0]["id"]) == (200, "blue", 1)
        green = post_query(proxy, logical, [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], f"user-{user}")
        assert (green.status_code, green.headers["x-bluegreen-color"], green.json()["result"]["points"][0]["id"]) == (200, "green", 2)
    neither = post_query(proxy, logical, [0.1] * 5, "user-x")
    assert (neither.status_code, neither.headers["x-bluegreen-color"]) == (400, "blue")
    assert "dimension" in neither.json()["status"]["error"].lower()
    # A raw write under `writes: both` lands on the one colour its length fits, acknowledged.
    client = qdrant_client(proxy.url, timeout=30)
    client.upsert(logical, [models.PointStruct(id=50, vector=[0.5] * 6, payload={"raw": True})], wait=True)
    client.close()
    assert direct.retrieve(f"{logical}_green", [50])[0].payload == {"raw": True}
    assert direct.retrieve(f"{logical}_blue", [50]) == []
    after = proxy.metrics_text()

    def pinned(colour: str) -> float:
        return (metric_value(after, "bluegreen_pinned_total", route=logical, color=colour)
                - metric_value(before, "bluegreen_pinned_total", route=logical, color=colour))

    assert (pinned("blue"), pinned("green")) == (21, 21)
