"""Smoke test of the gRPC benchmark: `python -m benchmarks.grpc_bench --quick` runs and reports every target
(the whole proxy on a routed and an unrouted collection, and the bare transport beside them).

Nothing about speed is asserted; a quick run is far too short for its figures to mean anything.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.grpc_bench import STREAMS, find_h2load

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,  # runs the gRPC benchmark with h2load against every target
    pytest.mark.skipif(
        find_h2load() is None, reason="the gRPC benchmark needs h2load: apt-get install nghttp2-client (CI installs it)"
    ),
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("grpc-bench-results")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.grpc_bench", "--quick", "--seconds", "0.5", "--variants", "transport", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-5000:]}"
    [result_file] = out.glob("grpc-quick-*.json")
    return json.loads(result_file.read_text()), out


def test_every_target_and_stream_count_measured(quick_run):
    results, _ = quick_run
    assert results["targets"] == ["direct", "proxy", "unrouted", "transport"]
    measured = {(r["target"], r["streams"]) for r in results["runs"] if r["calls"] > 0}
    assert measured == {(t, s) for t in results["targets"] for s in STREAMS}
    for run in results["runs"]:
        assert run["failed"] == 0, run
        assert run["latency_ms"]["p50"] is not None and run["latency_ms"]["p99"] is not None, run
        if run["target"] != "direct":
            assert run["cpu_us_per_call"] is not None and run["cpu_us_per_call"] > 0, run


def test_ratios_and_verdicts_reported(quick_run):
    results, out = quick_run
    assert set(results["summary"]) == {f"{t} {s}" for t in ("proxy", "unrouted", "transport") for s in STREAMS}
    assert set(results["compared"]) == {f"proxy/transport {s}" for s in STREAMS}
    for row in results["summary"].values():
        assert row["throughput_ratio"] > 0 and row["cpu_us_per_call"] > 0
    assert [v["target"] for v in results["verdicts"]] == [
        "added p50 at 1 stream <= 0.5 ms", "throughput at 16 streams >= 0.5 x direct"]
    report = (out / "grpc-latest-quick.md").read_text()
    assert "## Targets" in report and "| proxy | 16 |" in report and "| unrouted | 1 |" in report


def test_nothing_left_listening(quick_run):
    results, _ = quick_run
    assert results["ports"]
    for port in results["ports"]:
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still accepts connections after the run"
