"""Text queries through the proxy: `python -m benchmarks.embed [--seconds 8] [--rate 200] [--rounds 3] [--out FILE]`.

One proxy (fixed upstream: nginx answering every search with the same 10 points, so what is left is
the proxy's and the model's cost) with routes for each local model, with and without a cache:
- the model's own time for one query, timed in this process (`encode([text])`, the same code);
- text queries (`{"query": {"text": ...}}`) at 1 and 16 connections (wrk, closed loop), cache miss
  (`cache_size: 0`) and cache hit (a pool of 64 texts, warmed), next to raw-vector queries on a route
  without `embed` (the forwarding cost) and on a route whose colours' sizes differ (the pinning check);
  added latency over the model's own time = text mean - raw mean - the model's mean time per call in
  the proxy during that run (`bluegreen_embed_duration_seconds`, so both are timed at the same moment);
- raw-vector latency in an open loop (`--rate` requests/s) alone, then while wrk keeps MiniLM busy
  with cache-missing text queries at 4 connections, alternating for `--rounds` rounds (medians), so
  that drift on a shared machine hits both alike: the p50/p99 ratios (target <= 1.2).
Needs wrk and nginx, and the embed extra.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from benchmarks import nginx, workload, wrk
from benchmarks.children import LOOPBACK, BackgroundLoad, Children, free_port
from benchmarks.targets import start_fixed_upstream

MODELS = {"minilm": "all-MiniLM-L6-v2", "wordllama": "wordllama-256"}
_WORDS = (
    "blue green rollout collection vector search model embedding user query index shard replica payload filter "
    "latency throughput cache batch token sentence document migration cluster snapshot quantization recall"
).split()


def texts(count: int, seed: int, words: int = 12) -> list[str]:
    """Distinct sentences of `words` words (about 15 tokens), from a fixed seed."""
    import random

    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(_WORDS) for _ in range(words)) for i in range(count)]


def text_bodies(sentences: list[str]) -> list[bytes]:
    return [json.dumps({"query": {"text": s, "model": "any"}, "limit": workload.SEARCH_LIMIT, "with_payload": True}).encode() for s in sentences]


def raw_bodies(count: int) -> list[bytes]:
    """Query API bodies with a raw 384-dim vector (the search bodies' vectors)."""
    return [json.dumps({"query": json.loads(b)["vector"], "limit": workload.SEARCH_LIMIT, "with_payload": True}).encode()
            for b in workload.search_bodies(count)]


def proxy_config(port: int, admin_port: int, upstream_port: int) -> str:
    embedders = "".join(
        f"  {name}: {{type: local, model: {model}}}\n  {name}_nocache: {{type: local, model: {model}, cache_size: 0}}\n"
        for name, model in MODELS.items()
    )
    routes = ["  plain: {blue: plain_blue, green: plain_green}"]
    routes += ["  pin: {blue: pin_blue, green: pin_green, embed: {blue: minilm, green: wordllama}}"]
    for name in MODELS:
        for embedder in (name, f"{name}_nocache"):
            routes.append(f"  {embedder}: {{blue: {embedder}_blue, green: {embedder}_green, embed: {{blue: {embedder}, green: {embedder}}}}}")
    return (
        f"listen: {{host: {LOOPBACK}, port: {port}}}\nadmin: {{host: {LOOPBACK}, port: {admin_port}}}\n"
        f"upstream: {{url: 'http://{LOOPBACK}:{upstream_port}', timeout: 30s}}\n"
        f"embedders:\n{embedders}routes:\n" + "\n".join(routes) + "\n"
    )


def model_own_time(model: str, sentences: list[str]) -> dict:
    """One query at a time through the proxy's own model code, in this process."""
    from proxy.embedding.local import local_model

    loaded = local_model(model)
    for sentence in sentences[:10]:
        loaded.encode([sentence])
    samples = []
    for sentence in sentences:
        started = time.perf_counter()
        loaded.encode([sentence])
        samples.append(time.perf_counter() - started)
    samples.sort()
    batch = sentences[:64]
    started = time.perf_counter()
    loaded.encode(batch)
    batch_seconds = time.perf_counter() - started
    return {"p50_ms": round(samples[len(samples) // 2] * 1000, 3), "p99_ms": round(samples[int(len(samples) * 0.99)] * 1000, 3),
            "batch64_texts_per_s": round(len(batch) / batch_seconds, 1)}


def model_seconds(metrics_url: str, embedder: str) -> tuple[float, float]:
    """(calls, seconds) of the embedder's model so far, from the proxy's /metrics."""
    calls = seconds = 0.0
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if f'embedder="{embedder}"' in line:
                if line.startswith("bluegreen_embed_duration_seconds_count"):
                    calls = float(line.rsplit(" ", 1)[1])
                elif line.startswith("bluegreen_embed_duration_seconds_sum"):
                    seconds = float(line.rsplit(" ", 1)[1])
    return calls, seconds


def closed(url: str, script: Path, connections: int, seconds: int, metrics_url: str | None = None, embedder: str | None = None) -> dict:
    background = BackgroundLoad()
    before = model_seconds(metrics_url, embedder) if embedder else None
    result = wrk.run(url, script, connections, seconds)
    result["others_cpu_share"] = background.finish()["other_processes_share"]
    if before is not None:
        time.sleep(0.5)  # calls wrk left in flight finish
        calls, spent = model_seconds(metrics_url, embedder)
        calls, spent = calls - before[0], spent - before[1]
        result["model_calls"] = calls
        result["model_ms_per_call"] = round(spent / calls * 1000, 3) if calls else None
    return result


def open_loop(port: int, path: str, bodies: list[bytes], rate: int, seconds: float, workdir: Path) -> dict:
    spec = workdir / f"open-{path.replace('/', '_')}.json"
    spec.write_text(json.dumps({"paths": [path], "bodies": [b.decode() for b in bodies]}))
    args = [sys.executable, "-m", "benchmarks.open_loop", "--port", str(port), "--rate", str(rate),
            "--seconds", str(seconds), "--connections", "16", "--requests", str(spec)]
    completed = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if completed.returncode != 0:
        raise RuntimeError(f"open-loop generator failed: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embed", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8, help="length of one closed-loop run")
    parser.add_argument("--rate", type=int, default=200, help="open loop: raw-vector requests/s")
    parser.add_argument("--mixed-seconds", type=float, default=8.0, help="length of one open-loop run")
    parser.add_argument("--rounds", type=int, default=3, help="mixed: rounds of (alone, with text)")
    parser.add_argument("--out", help="write the JSON results here")
    args = parser.parse_args(argv)
    if wrk.find_wrk() is None or nginx.find_nginx() is None:
        print("benchmarks.embed: needs wrk and nginx: apt-get install wrk nginx", file=sys.stderr)
        return 2

    def note(text: str) -> None:
        print(f"[embed bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    results: dict = {"args": vars(args), "model_own_time": {}, "closed_loop": [], "mixed": {}}
    misses = texts(2048, seed=3)
    hits = texts(64, seed=5)
    note("models' own time, in this process")
    for name, model in MODELS.items():
        results["model_own_time"][name] = model_own_time(model, misses[:300])
    with tempfile.TemporaryDirectory(prefix="bluegreen-embed-bench-") as scratch:
        workdir = Path(scratch)
        children = Children(workdir)
        try:
            upstream = start_fixed_upstream(children, workdir)
            port, admin_port = free_port(), free_port()
            config = workdir / "bluegreen.yaml"
            config.write_text(proxy_config(port, admin_port, upstream.port))
            proxy = children.start("proxy", [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
                                   ready_url=f"http://{LOOPBACK}:{admin_port}/healthz", timeout=120)
            url = f"http://{LOOPBACK}:{port}"
            metrics_url = f"http://{LOOPBACK}:{admin_port}/metrics"
            scripts = {
                "raw": ("plain", raw_bodies(256)),
                "raw, pinned by size": ("pin", raw_bodies(256)),
                **{f"text {name}, miss": (f"{name}_nocache", text_bodies(misses)) for name in MODELS},
                **{f"text {name}, hit": (name, text_bodies(hits)) for name in MODELS},
            }
            for label, (route, bodies) in scripts.items():
                script = wrk.write_script(workdir / f"{route}-{len(bodies)}.lua", [f"/collections/{route}/points/query"], bodies)
                closed(url, script, 4, 1)  # warm-up (and the hit pool into the cache)
                time.sleep(0.5)
                embedder = route if route in {f"{n}_nocache" for n in MODELS} else None
                for connections in (1, 16):
                    note(f"{label}, {connections} connections")
                    result = closed(url, script, connections, args.seconds, metrics_url, embedder)
                    results["closed_loop"].append({"label": label, "route": route, **result})

            raw = raw_bodies(256)
            busy_script = wrk.write_script(workdir / "busy.lua", ["/collections/minilm_nocache/points/query"], text_bodies(misses))
            rounds: list[dict] = []
            for index in range(args.rounds):
                note(f"mixed, round {index + 1}: raw vectors at {args.rate}/s alone")
                alone = open_loop(port, "/collections/plain/points/query", raw, args.rate, args.mixed_seconds, workdir)
                note(f"mixed, round {index + 1}: the same while MiniLM embeds cache-missing text queries at 4 connections")
                busy: dict = {}
                load = threading.Thread(target=lambda: busy.update(wrk.run(url, busy_script, 4, int(args.mixed_seconds) + 3)))
                load.start()
                time.sleep(1.0)
                mixed = open_loop(port, "/collections/plain/points/query", raw, args.rate, args.mixed_seconds, workdir)
                load.join()
                rounds.append({"alone": alone, "with_text": mixed, "text_load": busy})
            results["mixed"] = rounds
        finally:
            children.stop_all()

    print_report(results)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def print_report(results: dict) -> None:
    own = results["model_own_time"]
    print("\nModel's own time (one query, this process): " + ", ".join(
        f"{name} p50 {figures['p50_ms']:.2f} ms (batch of 64: {figures['batch64_texts_per_s']:,.0f} texts/s)" for name, figures in own.items()))
    rows = {(r["label"], r["connections"]): r for r in results["closed_loop"]}
    print("\n| request | connections | req/s | p50 ms | p99 ms | added p50 over raw | model ms per call (texts per call) | added over raw + model (means) |")
    print("|---|---|---|---|---|---|---|---|")
    for (label, connections), r in rows.items():
        raw = rows[("raw", connections)]
        added = r["latency_ms"]["p50"] - raw["latency_ms"]["p50"]
        model = r.get("model_ms_per_call")
        model_cell = over_model = ""
        if model is not None:
            model_cell = f"{model:.2f} ({(r['requests'] / r['model_calls']) if r['model_calls'] else 0:.1f})"
            if connections == 1:
                over_model = f"{r['latency_ms']['mean'] - raw['latency_ms']['mean'] - model:+.2f} ms"
        print(f"| {label} | {connections} | {r['throughput_rps']:,.0f} | {r['latency_ms']['p50']:.2f} | {r['latency_ms']['p99']:.2f} | "
              f"{added:+.2f} ms | {model_cell} | {over_model} |")
    rounds = results["mixed"]
    if rounds:
        def median(side: str, key: str) -> float:
            return statistics.median(r[side]["latency_ms"][key] for r in rounds)

        text_rps = statistics.median(r["text_load"].get("throughput_rps", 0) for r in rounds)
        alone50, alone99, busy50, busy99 = median("alone", "p50"), median("alone", "p99"), median("with_text", "p50"), median("with_text", "p99")
        print(f"\nRaw vectors at {results['args']['rate']}/s, medians of {len(rounds)} rounds: alone p50 {alone50:.2f} ms, p99 {alone99:.2f} ms; "
              f"with {text_rps:,.0f} text queries/s on MiniLM: p50 {busy50:.2f} ms, p99 {busy99:.2f} ms; "
              f"ratio p50 {busy50 / alone50:.2f}, p99 {busy99 / alone99:.2f} (target <= 1.2)")
        for index, r in enumerate(rounds):
            a, b = r["alone"]["latency_ms"], r["with_text"]["latency_ms"]
            print(f"  round {index + 1}: alone p50/p99 {a['p50']:.2f}/{a['p99']:.2f} ms, with text {b['p50']:.2f}/{b['p99']:.2f} ms")
    others = max((r.get("others_cpu_share", 0) for r in results["closed_loop"]), default=0)
    print(f"\nother processes used up to {others:.0%} of the machine's CPU during a closed-loop run")


if __name__ == "__main__":
    sys.exit(main())
