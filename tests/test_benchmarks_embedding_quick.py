"""Smoke test of the text-in benchmark: `python -m benchmarks.embedding --quick` runs every scenario and reports.

Nothing about speed is asserted; a quick run is far too short for its figures to mean anything. The
test shortens the quick plan further (text runs at one connection, fewer points): every scenario
still runs through the harness.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from benchmarks.embedding import MODELS
from benchmarks.wrk import find_wrk
from tests.support import REPO_ROOT

pytestmark = [
    pytest.mark.slow,  # runs every text-in benchmark scenario with wrk and the local models (about 30 s)
    pytest.mark.skipif(find_wrk() is None, reason="the benchmark needs wrk: apt-get install wrk (CI installs it)"),
]


# `python -m benchmarks.embedding --quick` on a smaller plan.
SMOKE_RUN = """
import dataclasses, sys
from benchmarks import embedding
embedding.QUICK = dataclasses.replace(embedding.QUICK, connections=(1,), points=100)
sys.exit(embedding.main(sys.argv[1:]))
"""


def test_quick_embedding_benchmark_reports_every_scenario_and_leaves_nothing_listening(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-c", SMOKE_RUN, "--quick", "--out", str(tmp_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-5000:]}"
    [result_file] = tmp_path.glob("embedding-quick-*.json")
    results = json.loads(result_file.read_text())

    assert [m["embedder"] for m in results["models"]] == list(MODELS)
    for model in results["models"]:
        assert model["alone"]["single_ms"]["p50"] > 0 and model["alone"]["batch_texts_per_s"] > 0
        kinds = {(run["kind"], run["connections"]) for run in model["runs"] if run["requests"] > 0}
        raw_kinds = ("direct", "proxy, route without embed", "proxy, embed route", "proxy, pinned by size (50 %)")
        assert kinds == {(f"raw vector, {kind}", 1) for kind in raw_kinds} | {
            (kind, c) for kind in ("text, cache miss", "text, cache hit") for c in results["plan"]["connections"]
        }
        for run in model["runs"]:
            # A wrong status means the harness is mis-wired (an embed route that does not embed), not slow.
            assert run["failed_total"] == 0, run
            if run["kind"] == "text, cache miss":
                assert run["embedder"]["texts"] > 0 and run["embedder"]["cache_hits"] == 0, run
            if run["kind"] == "text, cache hit":
                assert run["embedder"]["texts"] == 0 and run["embedder"]["cache_hits"] > 0, run

    mixed = results["mixed"]["runs"]
    assert [r["text"] is None for r in mixed] == [True, False, False] * results["plan"]["mixed_rounds"]
    assert len(results["mixed"]["summary"]) == 3 and all(row["p99_ratio"] > 0 for row in results["mixed"]["summary"])
    assert all(r["raw"]["requests"] > 0 and r["raw"]["failed_total"] == 0 for r in mixed)
    assert all(r["texts_embedded"] > 0 for r in mixed if r["text"] is not None)
    assert all(r["texts_embedded"] == 0 for r in mixed if r["text"] is None)  # the proxy was idle between runs

    lag = results["loop_lag"]["overshoot"]
    assert len(lag) == 3 and all(row["samples"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in lag.values())

    report = (tmp_path / "embedding-latest-quick.md").read_text()
    for heading in ("## Targets", "## Per model", "## Runs", "## Mixed", "## The event loop"):
        assert heading in report
    for port in results["ports"]:
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still accepts connections after the run"
