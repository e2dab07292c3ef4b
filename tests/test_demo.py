"""`bluegreen-proxy demo --quick`: the README's first command tells the model-migration story and cleans up."""
from __future__ import annotations

import re
import socket
import subprocess
import sys

import pytest

from tests.support import REPO_ROOT

pytestmark = pytest.mark.slow  # the whole demo: upstream, proxy, two models, a migration and a rollback

STEP_LINE = re.compile(
    r"^\s*(green \d+%|rollback: green 0%) \|\s+(\d+) text queries, (\d+) failed \| "
    r"blue\s+([\d.]+)%\s+green\s+([\d.]+)% \| own sentence first\s+([\d.]+)%",
    re.MULTILINE,
)


def test_quick_demo_migrates_text_from_minilm_to_wordllama_rolls_back_and_leaves_nothing_running():
    completed = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "demo", "--quick"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr

    # Populated through the proxy from text alone: each colour holds its own model's vectors.
    assert re.search(r"blue `articles_minilm` (\d+) points x 384 dims, green `articles_wordllama` \1 points x 256 dims", out), out

    steps = {
        label: {"queries": int(queries), "failed": int(failed), "blue": float(blue), "green": float(green), "exact": float(exact)}
        for label, queries, failed, blue, green, exact in STEP_LINE.findall(out)
    }
    assert list(steps) == ["green 0%", "green 10%", "green 50%", "green 100%", "rollback: green 0%"], out
    assert all(step["queries"] >= 200 for step in steps.values()), out  # the quick story's floor per step
    assert (steps["green 0%"]["blue"], steps["green 0%"]["green"]) == (100.0, 0.0)
    assert 2.0 <= steps["green 10%"]["green"] <= 20.0, out
    assert 35.0 <= steps["green 50%"]["green"] <= 65.0, out  # text queries served by both colours
    assert (steps["green 100%"]["blue"], steps["green 100%"]["green"]) == (0.0, 100.0)
    assert (steps["rollback: green 0%"]["blue"], steps["rollback: green 0%"]["green"]) == (100.0, 0.0)
    assert all(step["failed"] == 0 for step in steps.values()), out
    # Each colour embeds a query with the model that embedded its documents, so a sentence finds itself.
    assert all(step["exact"] == 100.0 for step in steps.values()), out
    # Latency per collection comes from the proxy's own histogram; the embedders' work from its counters.
    assert re.search(r"articles_minilm: p50\s+[\d.]+ms p95\s+[\d.]+ms\s+articles_wordllama: p50\s+[\d.]+ms p95\s+[\d.]+ms", out), out
    # One question through qdrant-client from a blue user and a green user: each colour answers from its own model.
    answers = dict(re.findall(r'^\s+(blue|green)\s+\((minilm|small), [\w.-]+\): 0\.\d\d "[^"]+\."$', out, re.MULTILINE))
    assert answers == {"blue": "minilm", "green": "small"}, out
    embedded = dict(re.findall(r"(minilm|small) embedded (\d+) texts", out))
    assert int(embedded["minilm"]) >= 240 and int(embedded["small"]) >= 240, out  # at least the corpus, per colour
    assert "5. done: 0 failed requests" in out

    ports = {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out)}
    assert len(ports) == 3  # upstream, proxy data, proxy admin
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening after the demo"
