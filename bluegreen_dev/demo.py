"""`bluegreen-proxy demo`: a model migration on this machine, clients sending text only, nothing else running.

Starts the embedded upstream and the proxy as child processes in a temporary directory. Blue holds a
small text corpus embedded with the local MiniLM (384 dims), green the same corpus embedded with the
local WordLlama (256 dims), both populated THROUGH the proxy by one text-only upsert stream
(`writes: both`, `embed: {blue: minilm, green: small}`). Clients send only text (`models.Document`)
while the config file raises green 0 -> 10 -> 50 -> 100 % and then rolls back; each step prints the
share per colour, how often a query found its own sentence first, and p50/p95 per collection, read
from the proxy's own /metrics.
"""
from __future__ import annotations

import asyncio
import itertools
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
from qdrant_client import AsyncQdrantClient, models

from proxy.process import stop_process

LOGICAL, BLUE, GREEN = "articles", "articles_minilm", "articles_wordllama"
EMBEDDERS = {  # name in the config -> (local model, dimensions)
    "minilm": ("all-MiniLM-L6-v2", 384),
    "small": ("wordllama-256", 256),
}
ROUTE_EMBED = {"blue": "minilm", "green": "small"}
# What a client writes in `Document.model`: not looked up, the colour decides.
CLIENT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
USERS = 2_000
UPSERT_BATCH = 100
# (label, green_percent): the ramp, then an instant rollback.
STEPS = (("green 0%", 0), ("green 10%", 10), ("green 50%", 50), ("green 100%", 100), ("rollback: green 0%", 0))


@dataclass
class Story:
    sentences: int
    seconds_per_step: float
    queries_per_step: int  # at least, so each step's shares mean something on a busy machine
    workers: int = 8


# MiniLM embeds about 300 sentences/s on one core: the quick corpus costs it about a second.
QUICK = Story(sentences=240, seconds_per_step=2.5, queries_per_step=200)
FULL = Story(sentences=600, seconds_per_step=8.0, queries_per_step=500)
STEP_LIMIT_FACTOR = 8  # a step never runs longer than this many times seconds_per_step

# The corpus: sentences built from four slots, so every sentence has its own set of words.
_WHO = ("The night nurse", "A retired pilot", "Our new intern", "The village baker", "A marine biologist",
        "The football coach", "My grandmother", "The museum guide", "A freelance translator", "The city mayor")
_DID = ("repaired an old bicycle", "baked sourdough bread", "photographed migrating whales",
        "planted tomatoes and basil", "painted a mural of the harbour", "studied ancient star charts",
        "wrote a letter to the council", "trained for a marathon", "tuned a vintage piano",
        "fixed a leaking roof", "read a novel about volcanoes", "cooked a spicy lentil soup")
_WHEN = ("before sunrise", "during the storm", "on Sunday afternoon", "after the long meeting",
         "in the middle of winter")


def corpus(count: int) -> list[str]:
    combos = list(itertools.product(_WHO, _DID, _WHEN))
    random.Random(15).shuffle(combos)
    if count > len(combos):
        raise ValueError(f"the corpus has at most {len(combos)} sentences")
    return [f"{who} {did} {when}." for who, did, when in combos[:count]]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
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
    embedders = "".join(f"  {name}: {{type: local, model: {model}}}\n" for name, (model, _) in EMBEDDERS.items())
    return (
        f"listen: {{host: 127.0.0.1, port: {data_port}}}\n"
        f"admin: {{host: 127.0.0.1, port: {admin_port}}}\n"
        f"upstream: {{url: '{upstream_url}'}}\n"
        "embedders:\n" + embedders +
        "routes:\n"
        f"  {LOGICAL}:\n"
        f"    blue: {BLUE}\n"
        f"    green: {GREEN}\n"
        f"    green_percent: {percent}\n"
        "    key: [header:x-user-id]\n"
        "    writes: both\n"
        f"    embed: {{blue: {ROUTE_EMBED['blue']}, green: {ROUTE_EMBED['green']}}}\n"
    )


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(text)
    os.replace(temp, path)


def _dimensions(colour: str) -> int:
    return EMBEDDERS[ROUTE_EMBED[colour]][1]


async def _create_collections(session: aiohttp.ClientSession, upstream: str) -> None:
    """Physical collections are made on the upstream itself: the proxy refuses to create a logical one."""
    for colour, name in (("blue", BLUE), ("green", GREEN)):
        layout = {"vectors": {"size": _dimensions(colour), "distance": "Cosine"}}
        async with session.put(f"{upstream}/collections/{name}", json=layout) as response:
            response.raise_for_status()


async def _populate(proxy_url: str, sentences: list[str]) -> None:
    """Text-only upserts through the proxy, as an unchanged application writes: qdrant-client sends the
    Documents as they are (`cloud_inference=True`) and the proxy embeds each colour's copy."""
    client = AsyncQdrantClient(url=proxy_url, cloud_inference=True, prefer_grpc=False, check_compatibility=False, timeout=60)
    try:
        for start in range(0, len(sentences), UPSERT_BATCH):
            await client.upsert(LOGICAL, wait=True, points=[
                models.PointStruct(id=i, vector=models.Document(text=text, model=CLIENT_MODEL), payload={"text": text})
                for i, text in enumerate(sentences[start:start + UPSERT_BATCH], start)
            ])
    finally:
        await client.close()


QUESTION = "Who fixed a bike early in the morning?"


async def _one_question_two_models(session: aiohttp.ClientSession, proxy_url: str) -> None:
    """The same question from a blue user and a green user (found with the proxy's colour endpoint),
    through qdrant-client: each colour answers with its own model's idea of the nearest sentence."""
    users: dict[str, str] = {}
    for number in range(USERS):
        user = f"user-{number}"
        async with session.get(f"{proxy_url}/bluegreen/routes/{LOGICAL}/color", headers={"x-user-id": user}) as response:
            users.setdefault((await response.json())["result"]["color"], user)
        if len(users) == 2:
            break
    print(f'   one question from a blue user and a green user (qdrant-client query_points, models.Document): "{QUESTION}"', flush=True)
    for colour in ("blue", "green"):
        client = AsyncQdrantClient(url=proxy_url, cloud_inference=True, prefer_grpc=False, check_compatibility=False,
                                   timeout=60, headers={"x-user-id": users[colour]})
        try:
            [hit] = (await client.query_points(LOGICAL, query=models.Document(text=QUESTION, model=CLIENT_MODEL),
                                               limit=1, with_payload=True)).points
        finally:
            await client.close()
        embedder = ROUTE_EMBED[colour]
        print(f"     {colour:<5} ({embedder}, {EMBEDDERS[embedder][0]}): {hit.score:.2f} \"{hit.payload['text']}\"", flush=True)


async def _describe(session: aiohttp.ClientSession, upstream: str, name: str) -> tuple[int, int]:
    """(points, vector size) of a physical collection, asked of the upstream itself."""
    async with session.get(f"{upstream}/collections/{name}") as response:
        result = (await response.json())["result"]
    return result["points_count"], result["config"]["params"]["vectors"]["size"]


@dataclass
class StepTraffic:
    by_colour: dict[str, int] = field(default_factory=lambda: {"blue": 0, "green": 0})
    exact_first: int = 0  # queries whose top hit was the sentence they were built from
    failed: int = 0


async def _traffic(session: aiohttp.ClientSession, proxy: str, sentences: list[str], story: Story) -> StepTraffic:
    """Text-only queries, the JSON qdrant-client sends for `query_points(query=models.Document(...))`, for
    `seconds_per_step` and at least `queries_per_step` queries (within a bounded time)."""
    traffic = StepTraffic()
    started = time.monotonic()
    deadline, limit = started + story.seconds_per_step, started + story.seconds_per_step * STEP_LIMIT_FACTOR
    rng = random.Random()

    def more() -> bool:
        now = time.monotonic()
        answered = sum(traffic.by_colour.values()) + traffic.failed
        return now < deadline or (answered < story.queries_per_step and now < limit)

    async def worker() -> None:
        while more():
            wanted = rng.randrange(len(sentences))
            body = {"query": {"nearest": {"text": sentences[wanted], "model": CLIENT_MODEL}}, "limit": 5}
            headers = {"x-user-id": f"user-{rng.randrange(USERS)}"}
            try:
                async with session.post(f"{proxy}/collections/{LOGICAL}/points/query", json=body, headers=headers) as response:
                    document = await response.json(content_type=None)
                    if response.status == 200:
                        traffic.by_colour[response.headers["x-bluegreen-color"]] += 1
                        points = document["result"]["points"]
                        traffic.exact_first += bool(points) and points[0]["id"] == wanted
                    else:
                        traffic.failed += 1
            except (aiohttp.ClientError, ValueError):
                traffic.failed += 1

    await asyncio.gather(*(worker() for _ in range(story.workers)))
    return traffic


def _metrics(admin: str) -> list:
    with urllib.request.urlopen(f"{admin}/metrics", timeout=5) as response:
        return list(text_string_to_metric_families(response.read().decode()))


def _latency_buckets(families: list) -> dict[str, dict[float, float]]:
    """collection -> {le: cumulative count} of the proxy's query latency histogram."""
    buckets: dict[str, dict[float, float]] = {}
    for family in families:
        if family.name != "bluegreen_request_duration_seconds":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name.endswith("_bucket") and labels.get("route") == LOGICAL and labels.get("operation") == "query":
                buckets.setdefault(labels["collection"], {})[float(labels["le"])] = sample.value
    return buckets


def _embedder_totals(families: list) -> dict[str, dict[str, float]]:
    """embedder -> texts embedded, calls to the model, query cache hits."""
    wanted = {
        "bluegreen_embed_texts_total": "texts",
        "bluegreen_embed_duration_seconds_count": "calls",
        "bluegreen_embed_cache_hits_total": "cache hits",
    }
    totals: dict[str, dict[str, float]] = {name: dict.fromkeys(wanted.values(), 0.0) for name in EMBEDDERS}
    for family in families:
        for sample in family.samples:
            if sample.name in wanted and sample.labels.get("embedder") in totals:
                totals[sample.labels["embedder"]][wanted[sample.name]] += sample.value
    return totals


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
    total = sum(traffic.by_colour.values())
    shares = "  ".join(f"{colour} {count / (total or 1) * 100:5.1f}%" for colour, count in traffic.by_colour.items())
    exact = f"own sentence first {traffic.exact_first / (total or 1) * 100:5.1f}%"
    latency = "  ".join(
        f"{collection}: p50 {_ms(_quantile(before.get(collection, {}), buckets, 0.5))} "
        f"p95 {_ms(_quantile(before.get(collection, {}), buckets, 0.95))}"
        for collection, buckets in sorted(after.items())
        if _quantile(before.get(collection, {}), buckets, 0.5) is not None
    )
    print(f"{label:>18} | {total:5d} text queries, {traffic.failed} failed | {shares} | {exact} | {latency}", flush=True)


async def _story(story: Story, workdir: Path) -> int:
    upstream_port, data_port, admin_port = _free_port(), _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    proxy_url, admin_url = f"http://127.0.0.1:{data_port}", f"http://127.0.0.1:{admin_port}"
    config_path = workdir / "bluegreen.yaml"
    sentences = corpus(story.sentences)
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
            await _create_collections(session, upstream_url)
            _write_atomically(config_path, _config(data_port, admin_port, upstream_url, 0))
            print(f"2. starting bluegreen-proxy on {proxy_url} (admin {admin_url}), route `{LOGICAL}` at 0% green: "
                  f"blue `{BLUE}` embeds with `minilm` ({EMBEDDERS['minilm'][0]}, local), "
                  f"green `{GREEN}` with `small` ({EMBEDDERS['small'][0]}, local)", flush=True)
            children.append(subprocess.Popen(
                [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config_path), "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT,
            ))
            await asyncio.to_thread(_wait_http, admin_url + "/healthz", children[-1])

            print(f"3. writing {len(sentences)} sentences through the proxy as text only "
                  f"(qdrant-client, cloud_inference=True, models.Document; writes: both)", flush=True)
            started = time.monotonic()
            await _populate(proxy_url, sentences)
            stored = []
            for colour, name in (("blue", BLUE), ("green", GREEN)):
                points, size = await _describe(session, upstream_url, name)
                stored.append(f"{colour} `{name}` {points} points x {size} dims")
            print(f"   stored in {time.monotonic() - started:.1f}s: " + ", ".join(stored), flush=True)

            print(f"4. text queries (a sentence of the corpus each) from {USERS} users while the config file is edited:", flush=True)
            failed = 0
            for label, percent in STEPS:
                _write_atomically(config_path, _config(data_port, admin_port, upstream_url, percent))
                await _wait_applied(session, admin_url, percent)
                before = _latency_buckets(_metrics(admin_url))
                traffic = await _traffic(session, proxy_url, sentences, story)
                _print_step(label, traffic, before, _latency_buckets(_metrics(admin_url)))
                failed += traffic.failed
                if label == "green 50%":
                    await _one_question_two_models(session, proxy_url)
            totals = _embedder_totals(_metrics(admin_url))
            print("   embedders (from /metrics): " + "; ".join(
                f"{name} embedded {each['texts']:.0f} texts in {each['calls']:.0f} model calls, "
                f"{each['cache hits']:.0f} query cache hits"
                for name, each in totals.items()
            ), flush=True)
        print(f"5. done: {failed} failed requests; every step applied without a restart, "
              f"and no client ever sent a vector. Stopping.", flush=True)
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
