"""The proxy end to end: the real qdrant-client -> proxy process -> embedded qdrant-edge upstream."""
from __future__ import annotations

import asyncio
import importlib.metadata
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import aiohttp
import httpx
import pytest
from qdrant_client import models
from qdrant_client.common.version_check import get_server_version, is_compatible
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.support import REPO_ROOT, RunningProxy, free_port, metric_value, qdrant_client, start_embedded_upstream, wait_until

DIM = 8
POINTS = 40


def make_collections(upstream_url: str, blue: str, green: str, green_points: int = POINTS) -> None:
    """Blue and green hold the same ids; each point's payload says which collection it lives in."""
    direct = qdrant_client(upstream_url, timeout=30)
    rng = random.Random(7)
    for name, count in ((blue, POINTS), (green, green_points)):
        direct.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
        if count:
            direct.upsert(name, [
                models.PointStruct(id=i, vector=[rng.random() for _ in range(DIM)], payload={"home": name})
                for i in range(count)
            ], wait=True)
    direct.close()


def route_yaml(name: str, blue: str, green: str, percent: float, **extra) -> str:
    lines = [f"  {name}:", f"    blue: {blue}", f"    green: {green}", f"    green_percent: {percent}"]
    lines += [f"    {key}: {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return f"docs_{tag}", f"docs_{tag}_blue", f"docs_{tag}_green"


@pytest.fixture
def proxy_factory(tmp_path, embedded_upstream):
    started: list[RunningProxy] = []

    def start(routes: str, extra_yaml: str = "", upstream_url: str | None = None) -> RunningProxy:
        proxy = RunningProxy(tmp_path / f"proxy{len(started)}", upstream_url or embedded_upstream, routes, extra_yaml)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


def colours_for(proxy_url: str, logical: str, keys: list[str]) -> dict[str, str]:
    """key -> colour that served its count request, read from the proxy's response headers."""

    async def run() -> dict[str, str]:
        seen: dict[str, str] = {}
        queue = list(keys)
        async with aiohttp.ClientSession() as session:
            async def worker() -> None:
                while queue:
                    key = queue.pop()
                    async with session.post(
                        f"{proxy_url}/collections/{logical}/points/count", json={"exact": True},
                        headers={"x-user-id": key},
                    ) as response:
                        assert response.status == 200, await response.text()
                        seen[key] = response.headers["x-bluegreen-color"]

            await asyncio.gather(*(worker() for _ in range(16)))
        return seen

    return asyncio.run(run())


def test_qdrant_client_works_unchanged_and_reads_stick(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 50))

    # qdrant-client's own compatibility check reads the upstream's version document through the proxy.
    assert is_compatible(importlib.metadata.version("qdrant-client"), get_server_version(proxy.url, {}, None, 5))
    client = qdrant_client(proxy.url)
    assert logical not in {c.name for c in client.get_collections().collections}  # the list passes through
    assert client.collection_exists(logical)
    assert client.get_collection(logical).points_count == POINTS  # info comes from blue
    homes_by_user = {}
    for user in range(24):
        sticky = qdrant_client(proxy.url, headers={"x-user-id": f"user-{user}"})
        homes = {
            point.payload["home"]
            for _ in range(3)
            for point in sticky.query_points(logical, query=[0.5] * DIM, limit=5).points
        }
        assert len(homes) == 1, f"user-{user} saw both colours: {homes}"
        homes_by_user[user] = homes.pop()
        sticky.close()
    assert set(homes_by_user.values()) == {blue, green}
    scrolled, _ = client.scroll(logical, limit=100)
    assert len(scrolled) == POINTS
    client.close()


@pytest.mark.slow  # 10 000 keys through the proxy at each step of a ramp
def test_split_matches_percentage_over_10000_keys_and_ramp_is_monotonic(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 10))
    keys = [f"user-{i}" for i in range(10_000)]

    at_10 = colours_for(proxy.url, logical, keys)
    green_share = sum(c == "green" for c in at_10.values()) / 100
    assert abs(green_share - 10) <= 1.5, green_share

    proxy.write_routes(route_yaml(logical, blue, green, 50))
    wait_until(lambda: proxy.admin_json()["routes"][logical]["effective_green_percent"] == 50, timeout=5)
    at_50 = colours_for(proxy.url, logical, keys)
    assert abs(sum(c == "green" for c in at_50.values()) / 100 - 50) <= 1.5
    moved_back = [k for k in keys if at_10[k] == "green" and at_50[k] == "blue"]
    assert moved_back == []

    metrics = proxy.metrics_text()
    green_count = metric_value(metrics, "bluegreen_requests_total", route=logical, color="green", operation="count", status="2xx")
    assert green_count == sum(c == "green" for c in at_10.values()) + sum(c == "green" for c in at_50.values())
    assert metric_value(metrics, "bluegreen_green_percent", route=logical) == 50


def points_in(upstream_url: str, collection: str, ids: list[int]) -> list[int]:
    direct = qdrant_client(upstream_url)
    found = sorted(point.id for point in direct.retrieve(collection, ids))
    direct.close()
    return found


@pytest.mark.parametrize("policy", ["blue", "green", "both"])
def test_write_policies(policy, names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green, green_points=0)
    proxy = proxy_factory(route_yaml(logical, blue, green, 50, writes=policy))
    client = qdrant_client(proxy.url)
    new_ids = [1000, 1001]
    client.upsert(logical, [models.PointStruct(id=i, vector=[1.0] * DIM, payload={"new": True}) for i in new_ids], wait=True)
    in_blue, in_green = points_in(embedded_upstream, blue, new_ids), points_in(embedded_upstream, green, new_ids)
    assert (in_blue == new_ids) == (policy in ("blue", "both"))
    assert (in_green == new_ids) == (policy in ("green", "both"))
    client.delete(logical, points_selector=models.PointIdsList(points=[1000]), wait=True)
    assert 1000 not in points_in(embedded_upstream, blue, new_ids) + points_in(embedded_upstream, green, new_ids)
    client.close()


def test_both_writes_acknowledged_only_when_both_succeed(names, embedded_upstream, proxy_factory):
    logical, blue, _ = names
    make_collections(embedded_upstream, blue, names[2])
    missing_green = f"{blue}_missing"
    proxy = proxy_factory(route_yaml(logical, blue, missing_green, 0, writes="both"))
    client = qdrant_client(proxy.url)
    with pytest.raises(UnexpectedResponse) as caught:
        client.upsert(logical, [models.PointStruct(id=2000, vector=[1.0] * DIM)], wait=True)
    assert caught.value.status_code == 404
    assert missing_green in caught.value.content.decode()  # the failing side's own error
    # Blue took the write; the client retries once green exists, and nothing is lost.
    qdrant_client(embedded_upstream).create_collection(
        missing_green, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert(logical, [models.PointStruct(id=2000, vector=[1.0] * DIM)], wait=True)
    assert points_in(embedded_upstream, blue, [2000]) == [2000]
    assert points_in(embedded_upstream, missing_green, [2000]) == [2000]
    client.close()


def test_refusals_and_upstream_errors_reach_the_client(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 100))
    client = qdrant_client(proxy.url)
    with pytest.raises(UnexpectedResponse) as refused:
        client.delete_collection(logical)
    assert refused.value.status_code == 400 and blue in refused.value.content.decode()
    assert client.collection_exists(blue)  # nothing was deleted
    with pytest.raises(UnexpectedResponse) as wrong_dim:
        client.query_points(logical, query=[0.1, 0.2, 0.3])
    assert wrong_dim.value.status_code == 400
    assert "Vector dimension error" in wrong_dim.value.content.decode()
    malformed = httpx.post(f"{proxy.url}/collections/{logical}/points/query", content=b"{not json")
    assert malformed.status_code == 400 and "error" in malformed.json()["status"]
    client.close()


def test_valid_reload_applies_within_a_second(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 0))
    proxy.write_routes(route_yaml(logical, blue, green, 100))
    written = time.monotonic()
    wait_until(
        lambda: httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}).headers["x-bluegreen-color"] == "green",
        timeout=1.0,
    )
    assert time.monotonic() - written <= 1.0
    assert proxy.admin_json()["generation"] == 2


def test_invalid_file_keeps_last_good_config_until_the_next_good_one(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 100))
    proxy.config_path.write_text(proxy.config_text(route_yaml(logical, blue, green, 150)))
    wait_until(lambda: proxy.admin_json()["last_reload"]["result"] == "failure")
    metrics = proxy.metrics_text()
    assert metric_value(metrics, "bluegreen_config_last_reload_successful") == 0
    assert metric_value(metrics, "bluegreen_config_reloads_total", result="failure") == 1
    document = proxy.admin_json()
    assert document["generation"] == 1
    assert document["last_reload"]["result"] == "failure"
    assert f"routes.{logical}.green_percent: must be <= 100" in document["last_reload"]["error"]
    assert httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}).headers["x-bluegreen-color"] == "green"

    proxy.write_routes(route_yaml(logical, blue, green, 0))
    wait_until(lambda: proxy.admin_json()["generation"] == 2)
    assert metric_value(proxy.metrics_text(), "bluegreen_config_last_reload_successful") == 1
    assert httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}).headers["x-bluegreen-color"] == "blue"


def test_sighup_reloads_and_keeps_serving(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 0), extra_yaml="reload: {poll_interval: 1h}\n")
    proxy.server.process.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    assert proxy.server.process.poll() is None
    assert httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}).status_code == 200


@pytest.mark.slow  # 50 reloads under load
def test_zero_failed_requests_across_50_reloads_under_load(names, embedded_upstream, proxy_factory):
    logical, blue, green = names
    make_collections(embedded_upstream, blue, green)
    proxy = proxy_factory(route_yaml(logical, blue, green, 10))
    stop = threading.Event()
    outcomes: dict[str, int] = {"ok": 0, "failed": 0}
    failures: list[str] = []

    async def load() -> None:
        async with aiohttp.ClientSession() as session:
            async def worker(n: int) -> None:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        async with session.post(
                            f"{proxy.url}/collections/{logical}/points/query",
                            json={"query": [0.3] * DIM, "limit": 3}, headers={"x-user-id": f"w{n}-{i}"},
                        ) as response:
                            await response.read()
                            if response.status == 200:
                                outcomes["ok"] += 1
                            else:
                                outcomes["failed"] += 1
                                failures.append(f"{response.status}")
                    except aiohttp.ClientError as exc:
                        outcomes["failed"] += 1
                        failures.append(repr(exc))

            await asyncio.gather(*(worker(n) for n in range(8)))

    loader = threading.Thread(target=lambda: asyncio.run(load()))
    loader.start()
    try:
        for generation in range(50):
            routes = route_yaml(logical, blue, green, (generation * 7) % 101)
            if generation % 3 == 2:  # in place, as `echo > file` or a plain editor write does
                proxy.config_path.write_text(proxy.config_text(routes))
            else:
                proxy.write_routes(routes)
            time.sleep(0.06)
    finally:
        time.sleep(0.3)
        stop.set()
        loader.join(30)
    assert outcomes["failed"] == 0, failures[:5]
    assert outcomes["ok"] > 100
    assert proxy.admin_json()["generation"] > 10


@pytest.mark.slow  # stops and restarts an upstream under the proxy
def test_upstream_down_gives_qdrant_shaped_502_and_recovers(tmp_path, names, proxy_factory):
    logical, blue, green = names
    port = free_port()
    upstream, url = start_embedded_upstream(tmp_path / "data", tmp_path, port=port)
    try:
        make_collections(url, blue, green)
        proxy = proxy_factory(route_yaml(logical, blue, green, 50), upstream_url=url)
        client = qdrant_client(proxy.url, headers={"x-user-id": "u1"})
        assert client.count(logical).count == POINTS
        upstream.stop()

        down = httpx.post(f"{proxy.url}/collections/{logical}/points/count", json={}, headers={"x-user-id": "u1"})
        assert down.status_code == 502
        assert set(down.json()) == {"status", "time"} and "upstream unreachable" in down.json()["status"]["error"]
        assert httpx.get(proxy.url + "/").status_code == 502
        metrics = proxy.metrics_text()
        assert metric_value(metrics, "bluegreen_upstream_errors_total", route=logical, kind="connect") >= 1
        assert metric_value(metrics, "bluegreen_requests_total", route=logical, status="error") >= 1

        upstream, _ = start_embedded_upstream(tmp_path / "data", tmp_path, port=port)
        assert client.count(logical).count == POINTS  # recovered by itself
        client.close()
    finally:
        upstream.stop()


def test_invalid_config_stops_the_start_with_the_field_named(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("routes:\n  docs: {blue: a, green: b, green_percent: 120}\n")
    result = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "routes.docs.green_percent: must be <= 100" in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 2 and "routes.docs.green_percent: must be <= 100" in check.stderr


def test_check_prints_the_route_table_with_each_routes_safety():
    check = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "check", "--config", "config/rollout.yaml"],
        capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
        env={**os.environ, "BLUEGREEN_READER_KEY": "reader-secret", "BLUEGREEN_INGEST_KEY": "ingest-secret"},
    )
    assert check.returncode == 0 and check.stdout.startswith("config/rollout.yaml: valid")
    assert "clients: 2 api key(s), no jwt, anonymous none" in check.stdout and "secret" not in check.stdout
    row = next(line.split() for line in check.stdout.splitlines() if line.startswith("weka_sections "))
    assert row == ["weka_sections", "weka_sections", "weka_sections_jina", "10", "blue", "body",
                   "preflight,guard,rollout,failover", "header:x-user-id"]


@pytest.mark.slow  # a proxy that starts its own upstream child (test_server.py keeps the quick check)
def test_embedded_upstream_starts_and_stops_with_the_proxy(tmp_path):
    upstream_port = free_port()
    proxy = RunningProxy(
        tmp_path / "proxy", "embedded", route_yaml("notes", "notes_v1", "notes_v2", 100, writes="both"),
        upstream_options=f"data_dir: '{tmp_path / 'data'}', embedded_port: {upstream_port}",
    ).start()
    try:
        client = qdrant_client(proxy.url)
        assert httpx.get(proxy.url + "/").json()["version"]
        for name in ("notes_v1", "notes_v2"):
            client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
        client.upsert("notes", [models.PointStruct(id=1, vector=[1.0] * DIM, payload={"n": 1})], wait=True)
        assert client.retrieve("notes", [1])[0].payload == {"n": 1}
        assert (tmp_path / "data").is_dir()
        client.close()
    finally:
        proxy.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{upstream_port}/")
