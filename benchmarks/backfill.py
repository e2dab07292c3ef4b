"""Backfill throughput of `bluegreen-proxy migrate backfill` on the embedded upstream.

    python -m benchmarks.backfill [--points 20000] [--dim 384] [--out benchmarks/results]

Starts the embedded upstream, fills a blue collection (384-dim Cosine, HNSW m=24, int8, a keyword
index, a ~100-byte text field), then times the real CLI as a subprocess:
- copy: create-green, backfill into the empty green (every point written);
- rescan: the same backfill again without its checkpoint (every point read from both and compared,
  nothing written: the cost of making sure a copy is complete);
- re-embed (when the local models of the `embed` extra are installed): the text field embedded with
  each local model into a collection of that model's dimension.
Points/s is the command's own figure (points scanned / wall time of the scan); on a shared machine it
follows the load, so each line also gives the CPU-seconds per 1,000 points spent by the command and
by the upstream (getrusage and /proc), which do not. One run, one machine: compare the lines with each
other, not with another machine.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

from benchmarks.children import LOOPBACK, REPO_ROOT, Children, cpu_seconds, free_port

WORDS = ("vector search moves traffic from a live blue collection to a new green one a few percent at a time "
         "sticky per user with instant rollback when the model changes").split()
LOCAL_MODELS = {"minilm": ("all-MiniLM-L6-v2", 384), "small": ("wordllama-256", 256)}
REEMBED_POINTS = {"small": None, "minilm": 2000}  # MiniLM embeds ~300 texts/s on one core: a smaller corpus


def fill_blue(url: str, name: str, points: int, dim: int) -> None:
    rng = random.Random(1)
    with httpx.Client(base_url=url, timeout=120) as http:
        http.put(f"/collections/{name}", json={
            "vectors": {"size": dim, "distance": "Cosine"}, "hnsw_config": {"m": 24},
            "quantization_config": {"scalar": {"type": "int8", "always_ram": True}}}).raise_for_status()
        http.put(f"/collections/{name}/index?wait=true", json={"field_name": "lang", "field_schema": "keyword"}).raise_for_status()
        for start in range(0, points, 1000):
            batch = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(dim)],
                      "payload": {"lang": rng.choice(["en", "de"]), "text": " ".join(rng.choices(WORDS, k=14))}}
                     for i in range(start, min(points, start + 1000))]
            http.put(f"/collections/{name}/points?wait=true", json={"points": batch}).raise_for_status()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def migrate(*args: str) -> tuple[float, str]:
    """Run the CLI; its points/s figure from the `backfill complete` line."""
    done = subprocess.run([sys.executable, "-m", "proxy.cli", "migrate", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"migrate {args[0]} failed: {done.stderr}")
    line = next((l for l in done.stdout.splitlines() if l.startswith("backfill complete")), "")
    rate = float(line.split("(")[1].split()[0]) if line else 0.0
    return rate, line


def local_models_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import wordllama  # noqa: F401
        from proxy import embedders  # noqa: F401
    except ImportError:
        return False
    return True


def run(points: int, dim: int, workdir: Path) -> list[dict]:
    (workdir / "logs").mkdir()
    children = Children(workdir / "logs")
    results = []
    try:
        port = free_port()
        url = f"http://{LOOPBACK}:{port}"
        upstream = children.start("upstream", [sys.executable, "-m", "bluegreen_dev.embedded", "--data", str(workdir / "data"),
                                    "--host", LOOPBACK, "--port", str(port)], ready_url=url + "/")
        fill_blue(url, "blue", points, dim)
        migrate("create-green", "--upstream", url, "--from", "blue", "--to", "green")

        def measured(mode: str, corpus: int, size: int, *args: str) -> None:
            """One backfill: wall-clock rate, and CPU-seconds per 1,000 points of the command and the upstream."""
            cli_before, upstream_before, load = children_cpu(), cpu_seconds(upstream.pid), os.getloadavg()[0]
            rate, line = migrate("backfill", *args)
            cli, up = children_cpu() - cli_before, cpu_seconds(upstream.pid) - upstream_before
            results.append({"mode": mode, "points": corpus, "dim": size, "points_per_s": rate, "line": line,
                            "cli_cpu_per_1000": cli * 1000 / corpus, "upstream_cpu_per_1000": up * 1000 / corpus,
                            "load_average": load})

        for mode in ("copy", "rescan"):
            measured(mode, points, dim, "--upstream", url, "--from", "blue", "--to", "green",
                     "--checkpoint", str(workdir / f"{mode}.json"))
        if local_models_available():
            config = workdir / "bluegreen.yaml"
            config.write_text(f"upstream: {{url: '{url}'}}\nembedders:\n" + "".join(
                f"  {name}: {{type: local, model: {model}}}\n" for name, (model, _) in LOCAL_MODELS.items()))
            for name, (model, size) in LOCAL_MODELS.items():
                corpus = REEMBED_POINTS[name] or points
                source = "blue" if corpus == points else f"blue_{corpus}"
                if source != "blue":
                    fill_blue(url, source, corpus, dim)
                migrate("create-green", "--upstream", url, "--from", source, "--to", f"green_{name}", "--size", str(size))
                measured(f"re-embed {model}", corpus, size, "--config", str(config), "--from", source, "--to", f"green_{name}",
                         "--embedder", name, "--text-field", "text", "--checkpoint", str(workdir / f"{name}.json"))
    finally:
        children.stop_all()
    return results


def main() -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the embedders' import turns on INFO logging
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as workdir:
        results = run(args.points, args.dim, Path(workdir))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"backfill-{stamp}.json").write_text(json.dumps({"time": stamp, "results": results}, indent=1))
    lines = [f"# Backfill throughput, {stamp} (embedded upstream, {os.cpu_count()} CPUs shared with other work)", "",
             "| mode | points | dims | points/s (wall) | CPU-s per 1,000 points: command / upstream | load average |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['points']} | {r['dim']} | {r['points_per_s']:.0f} | "
              f"{r['cli_cpu_per_1000']:.2f} / {r['upstream_cpu_per_1000']:.2f} | {r['load_average']:.1f} |" for r in results]
    (out / "backfill-latest.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
