"""`bluegreen-proxy demo --quick`: the README's first command tells the whole story and cleans up."""
from __future__ import annotations

import re
import socket
import subprocess
import sys

from tests.support import REPO_ROOT


def test_quick_demo_ramps_green_rolls_back_and_leaves_nothing_running():
    completed = subprocess.run(
        [sys.executable, "-m", "proxy.cli", "demo", "--quick"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr

    shares = {
        label: (float(blue), float(green), int(failed))
        for label, failed, blue, green in re.findall(
            r"^\s*(green \d+%|rollback: green 0%) \|\s+\d+ searches, (\d+) failed \| blue\s+([\d.]+)%\s+green\s+([\d.]+)%",
            out, re.MULTILINE,
        )
    }
    assert list(shares) == ["green 0%", "green 10%", "green 50%", "green 100%", "rollback: green 0%"], out
    assert shares["green 0%"][:2] == (100.0, 0.0)
    assert 4.0 <= shares["green 10%"][1] <= 16.0
    assert 40.0 <= shares["green 50%"][1] <= 60.0
    assert shares["green 100%"][:2] == (0.0, 100.0)
    assert shares["rollback: green 0%"][:2] == (100.0, 0.0)
    assert all(failed == 0 for _, _, failed in shares.values())
    # Latency per collection comes from the proxy's own histogram.
    assert re.search(r"articles_minilm_sq8: p50\s+[\d.]+ms p95\s+[\d.]+ms", out)

    ports = {int(port) for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out)}
    assert len(ports) == 3  # upstream, proxy data, proxy admin
    for port in ports:
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still listening after the demo"
