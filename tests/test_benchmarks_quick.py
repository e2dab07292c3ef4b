"""Smoke test of the benchmark harness: `python -m benchmarks.run --quick` runs and reports every scenario.

Nothing about speed is asserted; a quick run is far too short for its figures to mean anything. The
test shortens the quick plan further (the connection counts and the open-loop rate that the targets are
judged at, a shorter churn, fewer points): every scenario and every target still runs through the
harness, in about half the time.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.nginx import find_nginx
from benchmarks.run import TARGETS
from benchmarks.wrk import find_wrk

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,  # runs every benchmark scenario with wrk and nginx (about 30 s)
    pytest.mark.skipif(
        find_wrk() is None or find_nginx() is None,
        reason="the benchmark needs wrk and nginx: apt-get install wrk nginx (CI installs them)",
    ),
]


# `python -m benchmarks.run --quick` on a smaller plan: only the connection counts and the rate the targets are judged at.
SMOKE_RUN = """
import dataclasses, sys
from benchmarks import run
run.QUICK = dataclasses.replace(
    run.QUICK, connections=(1, 16), open_loop_rates=(2000,), churn_seconds=1, embedded_points=100,
)
sys.exit(run.main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("bench-results")
    completed = subprocess.run(
        [sys.executable, "-c", SMOKE_RUN, "--quick", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, f"stdout:\n{completed.stdout[-3000:]}\nstderr:\n{completed.stderr[-5000:]}"
    [result_file] = out.glob("quick-*.json")
    return json.loads(result_file.read_text()), out


def test_every_closed_and_open_loop_scenario_reported(quick_run):
    results, _ = quick_run
    plan = results["plan"]
    closed = {(r["upstream"], r["connections"], r["target"]) for r in results["closed_loop"] if r["requests"] > 0}
    assert closed == {(u, c, t) for u in ("fixed", "embedded") for c in plan["connections"] for t in TARGETS}
    opened = {(r["upstream"], r["rate_rps"], r["target"]) for r in results["open_loop"] if r["requests"] > 0}
    assert opened == {(u, r, t) for u in ("fixed", "embedded") for r in plan["open_loop_rates"] for t in TARGETS}
    for row in results["closed_loop"] + results["open_loop"]:
        # A wrong status means the harness is mis-wired (a path the split did not rewrite), not slow.
        assert row["failed"]["status"] == 0, row
        for quantile in ("p50", "p90", "p99", "p99.9"):
            assert row["latency_ms"][quantile] is not None, row
        if row["target"] != "direct":
            assert row["resources"]["cpu_seconds_per_10k_requests"] is not None, row
            assert row["resources"]["peak_rss_mb"] > 0, row


def test_reload_churn_and_route_scaling_reported(quick_run):
    results, _ = quick_run
    churn = results["reload_churn"]
    assert churn["baseline"]["requests"] > 0 and churn["churn"]["requests"] > 0
    assert churn["config_writes"]["atomic"] > 0 and churn["config_writes"]["in_place"] > 0
    assert churn["reloads"]["success"] > 0  # the writes really reached the proxy
    scaling = results["route_scaling"]
    assert sorted({row["routes"] for row in scaling}) == sorted(results["plan"]["route_counts"])
    for row in scaling:
        assert row["requests"] > 0 and row["resources"]["cpu_us_per_request"] is not None


def test_report_written_and_targets_judged(quick_run):
    results, out = quick_run
    report = (out / "latest-quick.md").read_text()
    for heading in ("## Targets", "## Closed loop", "## Open loop", "## Reload churn", "## Routes scaling"):
        assert heading in report
    assert results["machine"]["nproc"] >= 1 and results["machine"]["kernel"]
    assert len(results["summary"]["targets"]) >= 7
    # None: not measurable in this run (say, the upstream alone could not keep the rate).
    assert all(target["met"] in (True, False, None) for target in results["summary"]["targets"])


def test_nothing_left_listening(quick_run):
    results, _ = quick_run
    assert results["ports"]
    for port in results["ports"]:
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still accepts connections after the run"
