"""`bluegreen-proxy demo`: the whole rollout story on this machine, with nothing else running.

Starts the embedded upstream and the proxy as child processes in a temporary directory, builds a
blue and a green collection that differ in layout, sends live search traffic with many user keys
while raising green 0 -> 10 -> 50 -> 100 by editing the config file, rolls back, and prints at each
step the share per colour and p50/p95 per collection, read from the proxy's own /metrics.
"""
from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.process import stop_process

LOGICAL, BLUE, GREEN = "articles", "articles_minilm", "articles_minilm_sq8"
DIM = 128
USERS = 2_000
# (label, green_percent): the ramp, then an instant rollback.
STEPS = (("green 0%", 0), ("green 10%", 10), ("green 50%", 50), ("green 100%", 100), ("rollback: green 0%", 0))


@dataclass
class Story:
    points: int
    seconds_per_step: float
    workers: int = 8


QUICK = Story(points=2_000, seconds_per_step=2.5)
FULL = Story(points=5_000, seconds_per_step=8.0)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[2:5]} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


def _config(data_port: int, admin_port: int, upstream_url: str, percent: float) -> str:
    return (
        f"listen: {{host: 127.0.0.1, port: {data_port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        f"upstream: {{url: '{upstream_url}'}}\n"
        "routes:\n"
        f"  {LOGICAL}:\n"
        f"    blue: {BLUE}\n"
        f"    green: {GREEN}\n"
        f"    green_percent: {percent}\n"
        "    key: [header:x-user-id]\n"
        "    writes: both\n"
    )


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


async def _build_collections(session: aiohttp.ClientSession, upstream: str, points: int) -> None:
    layouts = {
        BLUE: {"vectors": {"size": DIM, "distance": "Cosine"}, "hnsw_config": {"m": 16, "ef_construct": 100}},
        GREEN: {
            "vectors": {"size": DIM, "distance": "Cosine"},
            "hnsw_config": {"m": 32, "ef_construct": 200},
            "quantization_config": {"scalar": {"type": "int8", "always_ram": True}},
        },
    }
    rng = random.Random(42)
    vectors = [[rng.uniform(-1, 1) for _ in range(DIM)] for _ in range(points)]
    for name, layout in layouts.items():
        async with session.put(f"{upstream}/collections/{name}", json=layout) as response:
            response.raise_for_status()
        for start in range(0, points, 500):
            batch = [
                {"id": i, "vector": vectors[i], "payload": {"title": f"article {i}", "layout": name}}
                for i in range(start, min(start + 500, points))
            ]
            async with session.put(f"{upstream}/collections/{name}/points?wait=true", json={"points": batch}) as response:
                response.raise_for_status()


@dataclass
class StepTraffic:
    by_colour: dict[str, int] = field(default_factory=lambda: {"blue": 0, "green": 0})
    failed: int = 0


async def _traffic(session: aiohttp.ClientSession, proxy: str, seconds: float, workers: int) -> StepTraffic:
    traffic = StepTraffic()
    deadline = time.monotonic() + seconds
    rng = random.Random()

    async def worker() -> None:
        while time.monotonic() < deadline:
            body = {"query": [rng.uniform(-1, 1) for _ in range(DIM)], "limit": 5}
            headers = {"x-user-id": f"user-{rng.randrange(USERS)}"}
            try:
                async with session.post(f"{proxy}/collections/{LOGICAL}/points/query", json=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        traffic.by_colour[response.headers["x-bluegreen-color"]] += 1
                    else:
                        traffic.failed += 1
            except aiohttp.ClientError:
                traffic.failed += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return traffic


def _latency_buckets(admin: str) -> dict[str, dict[float, float]]:
    """collection -> {le: cumulative count} of the proxy's query latency histogram."""
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "bluegreen_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("route") == LOGICAL and labels.get("operation") == "query":
                buckets.setdefault(labels["collection"], {})[float(labels["le"])] = sample.value
    return buckets


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """Prometheus-style histogram_quantile over the step's delta; None when the step had no samples."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound, count in zip(bounds, counts):
        if count >= rank:
            if bound == float("inf"):
                return previous_bound
            share = (rank - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def _ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value * 1000:6.2f}ms"


def _print_step(label: str, traffic: StepTraffic, before, after) -> None:
    total = sum(traffic.by_colour.values()) or 1
    shares = "  ".join(f"{colour} {count / total * 100:5.1f}%" for colour, count in traffic.by_colour.items())
    latency = "  ".join(
        f"{collection}: p50 {_ms(_quantile(before.get(collection, {}), buckets, 0.5))} "
        f"p95 {_ms(_quantile(before.get(collection, {}), buckets, 0.95))}"
        for collection, buckets in sorted(after.items())
        if _quantile(before.get(collection, {}), buckets, 0.5) is not None
    )
    print(f"{label:>22} | {total:6d} searches, {traffic.failed} failed | {shares} | {latency}", flush=True)


async def _story(story: Story, workdir: Path) -> int:
    upstream_port, data_port, admin_port = _free_port(), _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    proxy_url, admin_url = f"http://127.0.0.1:{data_port}", f"http://127.0.0.1:{admin_port}"
    config_path = workdir / "bluegreen.yaml"
    children: list[subprocess.Popen] = []
    log = open(workdir / "processes.log", "wb")
    try:
        print(f"1. starting the embedded qdrant-edge upstream on {upstream_url}", flush=True)
        children.append(subprocess.Popen(
            [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(workdir / "data"), "--port", str(upstream_port)],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        await asyncio.to_thread(_wait_http, upstream_url + "/", children[-1])

        async with aiohttp.ClientSession() as session:
            print(f"2. building blue `{BLUE}` (HNSW m=16) and green `{GREEN}` (HNSW m=32, int8 scalar quantization): "
                  f"{story.points} points x {DIM} dims each", flush=True)
            await _build_collections(session, upstream_url, story.points)

            _write_atomically(config_path, _config(data_port, admin_port, upstream_url, 0))
            print(f"3. starting bluegreen-proxy on {proxy_url} (admin {admin_url}), route `{LOGICAL}` at 0% green", flush=True)
            children.append(subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config_path), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            await asyncio.to_thread(_wait_http, admin_url + "/healthz", children[-1])

            print(f"4. live search traffic from {USERS} users while the config file is edited:", flush=True)
            failed = 0
            for label, percent in STEPS:
                _write_atomically(config_path, _config(data_port, admin_port, upstream_url, percent))
                await _wait_applied(session, admin_url, percent)
                before = _latency_buckets(admin_url)
                traffic = await _traffic(session, proxy_url, story.seconds_per_step, story.workers)
                _print_step(label, traffic, before, _latency_buckets(admin_url))
                failed += traffic.failed
        print(f"5. done: {failed} failed requests; every step applied without a restart. Stopping.", flush=True)
        return 0 if failed == 0 else 1
    finally:
        for child in reversed(children):  # the proxy before its upstream
            stop_process(child)
        log.close()


async def _wait_applied(session: aiohttp.ClientSession, admin_url: str, percent: float, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with session.get(f"{admin_url}/admin/routes") as response:
            document = await response.json()
        if document["routes"][LOGICAL]["effective_green_percent"] == percent:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"the proxy did not apply green_percent {percent} within {timeout:g}s")


def run(quick: bool = False) -> int:
    story = QUICK if quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="bluegreen-demo-"))
    try:
        return asyncio.run(_story(story, workdir))
    except RuntimeError as exc:
        print(f"demo failed: {exc} (logs were in {workdir / 'processes.log'})", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
