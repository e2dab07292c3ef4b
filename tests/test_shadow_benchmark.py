"""Smoke test of `python -m benchmarks.shadow`: every configuration runs and the shadows it reports
are the ones configured. Nothing about speed is asserted (one 1-second round means nothing)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmarks.nginx import find_nginx
from benchmarks.shadow import CONFIGS
from benchmarks.wrk import find_wrk
from tests.support import REPO_ROOT

pytestmark = [
    pytest.mark.slow,  # one benchmark round per shadow configuration
    pytest.mark.skipif(
        find_wrk() is None or find_nginx() is None,
        reason="the benchmark needs wrk and nginx: apt-get install wrk nginx (CI installs them)",
    ),
]


def test_one_round_reports_every_configuration(tmp_path):
    out = tmp_path / "shadow.json"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.shadow", "--seconds", "1", "--rounds", "1", "--out", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    summary = json.loads(out.read_text())["summary"]
    assert set(summary) == set(CONFIGS)
    assert all(row["throughput_rps"] > 0 and row["cpu_us_per_request"] > 0 for row in summary.values())
    assert summary["no shadow block"]["compared_per_request"] == summary["sample 0"]["compared_per_request"] == 0
    assert 0 < summary["sample 0.05"]["compared_per_request"] < 0.2
    assert summary["sample 1.0"]["compared_per_request"] + summary["sample 1.0"]["dropped_per_request"] > 0.9
    assert "| sample 1.0 |" in completed.stdout
